"""Helpers for call tests: sipp as the trunk or the calling phone, and what a Matrix client does."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from tests.media.peers import SignalTrack, tone
from tests.peers.matrix import Client, dm_with, free_port, wait_until

SIP_SCENARIOS = Path(__file__).parents[1] / "sip" / "scenarios"


class Sipp:
    """One sipp run on 127.0.0.1 (bounded by -m and -timeout)."""

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


async def poll(check: Any, what: str) -> Any:
    """``wait_until`` off the event loop, so the aiortc peer keeps running while the client polls."""
    return await asyncio.to_thread(wait_until, check, 30.0, 0.1, what)


async def open_dm(client: Client, number: str) -> tuple[str, str]:
    """:func:`~tests.peers.matrix.dm_with` off the event loop, so aiortc peers keep running."""
    return await asyncio.to_thread(dm_with, client, number)


async def place_call(alice: Client, room_id: str, browser: RTCPeerConnection, lifetime: int = 60000) -> str:
    browser.addTrack(SignalTrack(tone(440, 1.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call_id = f"c{uuid.uuid4().hex}"
    content = {
        "call_id": call_id,
        "party_id": "a",
        "version": "1",
        "lifetime": lifetime,
        "offer": {"type": "offer", "sdp": browser.localDescription.sdp},
    }
    await asyncio.to_thread(alice.send_event, room_id, "m.call.invite", content)
    return call_id
