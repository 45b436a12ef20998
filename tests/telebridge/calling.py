"""Helpers for call tests: sipp as the trunk or the calling phone, and what a Matrix client does."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.media.peers import SignalTrack, tone
from tests.peers.matrix import Client, Synapse, dm_with, free_port, wait_until

SIP_SCENARIOS = Path(__file__).parents[1] / "sip" / "scenarios"


class Sipp:
    """One sipp run on 127.0.0.1 (bounded by -m and -timeout); as a context manager, stopped when it ends."""

    def __init__(self, workdir: Path, *args: str) -> None:
        if shutil.which("sipp") is None:
            pytest.skip("sipp (Debian sip-tester) is not installed; CI installs it")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *("sipp", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(free_even_port())),
                *("-p", str(self.port), "-m", "1", "-timeout", "90s", "-nostdin", *args),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("sipp did not finish") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Sipp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_even_port() -> int:
    """sipp's media port (RTP, and the port above it). Its default, 6000, collides between runs; bind(0)
    hands out odd ports on Linux, so try even ones from a range, bounded."""
    for _ in range(200):
        port = random.randrange(20000, 30000, 2)
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free even UDP port pair")


def call_events(
    client: Client, room_id: str, event_type: str, sender: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in client.messages(room_id)
        if e["type"] == event_type and (sender is None or e["sender"] == sender)
    ]


def hangups_of(client: Client, room_id: str, sender: str, call_id: str) -> list[dict[str, Any]]:
    """The ``m.call.hangup`` events ``sender`` sent for the call ``call_id``."""
    return [
        e for e in call_events(client, room_id, "m.call.hangup", sender) if e["content"]["call_id"] == call_id
    ]


def message_bodies(client: Client, room_id: str, sender: str | None = None) -> list[str]:
    """The bodies of the room's messages (the bridge's notices among them), from ``sender`` if given."""
    return [e["content"].get("body", "") for e in call_events(client, room_id, "m.room.message", sender)]


async def poll(check: Any, what: str) -> Any:
    """``wait_until`` off the event loop, so the aiortc peer keeps running while the client polls."""
    return await asyncio.to_thread(wait_until, check, 30.0, 0.1, what)


async def wait_for_call_events(
    client: Client, room_id: str, event_type: str, sender: str | None = None, what: str | None = None
) -> list[dict[str, Any]]:
    """:func:`call_events`, once there is one (``what`` names it in a time-out; the event type if not given)."""
    return await poll(lambda: call_events(client, room_id, event_type, sender), what or event_type)


async def open_dm(client: Client, number: str) -> tuple[str, str]:
    """:func:`~tests.peers.matrix.dm_with` off the event loop, so aiortc peers keep running."""
    return await asyncio.to_thread(dm_with, client, number)


async def user_with_dm(synapse: Synapse, number: str, name: str = "alice") -> tuple[Client, str, str]:
    """A new user with a DM open to ``number``: the client, the room and the phone's virtual user."""
    client = await asyncio.to_thread(synapse.new_user, name)
    room_id, phone = await open_dm(client, number)
    return client, room_id, phone


async def send_call_event(
    client: Client, room_id: str, event_type: str, call_id: str, party_id: str = "a", **content: Any
) -> None:
    """An ``m.call.*`` event (VoIP version 1) of the call ``call_id`` from the client's ``party_id``."""
    body = {"call_id": call_id, "party_id": party_id, "version": "1", **content}
    await asyncio.to_thread(client.send_event, room_id, event_type, body)


async def hang_up(client: Client, room_id: str, call_id: str, party_id: str = "a") -> None:
    """The user hangs up (``user_hangup``)."""
    await send_call_event(client, room_id, "m.call.hangup", call_id, party_id, reason="user_hangup")


async def place_call(alice: Client, room_id: str, browser: RTCPeerConnection, lifetime: int = 60000) -> str:
    browser.addTrack(SignalTrack(tone(440, 1.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call_id = f"c{uuid.uuid4().hex}"
    offer = {"type": "offer", "sdp": browser.localDescription.sdp}
    await send_call_event(alice, room_id, "m.call.invite", call_id, lifetime=lifetime, offer=offer)
    return call_id


async def receive_answer(
    client: Client, room_id: str, phone: str, browser: RTCPeerConnection, what: str = "m.call.answer"
) -> dict[str, Any]:
    """Wait for the phone's ``m.call.answer`` and give its SDP to ``browser``; the answer's content."""
    answers = await wait_for_call_events(client, room_id, "m.call.answer", phone, what)
    answer: dict[str, Any] = answers[0]["content"]
    await browser.setRemoteDescription(RTCSessionDescription(answer["answer"]["sdp"], "answer"))
    return answer
