"""Calls end to end: a scripted Matrix client doing what matrix-js-sdk does, with an aiortc peer for the
media, through a real Synapse and the bridge, to ``sipp`` as the trunk (or as the calling phone).

Its own Synapse and bridge (calls on), like the SMS tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.media.peers import SignalTrack, dominant_frequency, tone
from tests.peers.matrix import BridgeProcess, Client, Synapse, bridged_homeserver, free_port
from tests.telebridge.calling import (
    SIP_SCENARIOS,
    Sipp,
    call_events,
    hang_up,
    hangups_of,
    message_bodies,
    place_call,
    poll,
    receive_answer,
    send_call_event,
    user_with_dm,
    wait_for_call_events,
)

pytestmark = [pytest.mark.synapse, pytest.mark.slow]

SCENARIOS = Path(__file__).parent / "scenarios"
OWNED = "+447700900099"


@pytest.fixture(scope="module")
def trunk_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sip_port() -> int:
    """Where the bridge's SIP user agent listens (the phone in the inbound test calls it)."""
    return free_port()


@pytest.fixture(scope="module")
def call_world(
    tmp_path_factory: pytest.TempPathFactory, trunk_port: int, sip_port: int
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    env = {
        "TELEBRIDGE_CALLS__ENABLED": "true",
        "TELEBRIDGE_CALLS__SIP_PORT": str(sip_port),
        "TELEBRIDGE_CALLS__TRUNK": f"127.0.0.1:{trunk_port}",
        "TELEBRIDGE_CALLS__CALLER_ID": "+441632960001",
        "TELEBRIDGE_CALLS__MEDIA_WORKERS": "1",
        "TELEBRIDGE_CALLS__RING_TIMEOUT": "30",
        "TELEBRIDGE_SMS__OWNED_NUMBERS": f'{{"{OWNED}": "@callee:localhost"}}',
    }
    with bridged_homeserver(tmp_path_factory.mktemp("calls"), env) as world:
        yield world


async def record_audio(pc: RTCPeerConnection, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of what the remote track plays, and its sample rate (8000 for G.711)."""
    track = pc.getReceivers()[0].track
    chunks: list[np.ndarray] = []
    rate = 0
    while not chunks or sum(len(c) for c in chunks) < seconds * rate:
        frame = await asyncio.wait_for(track.recv(), 5)
        rate = frame.sample_rate
        data = frame.to_ndarray().reshape(-1)
        if len(frame.layout.channels) == 2:
            data = data[::2]
        chunks.append(data)
    return np.concatenate(chunks), rate


def call_record(bridge: BridgeProcess, call_id: str) -> dict[str, Any] | None:
    db_path = bridge.database.split(":", 1)[1]
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM call_record WHERE call_id=?", (call_id,)).fetchone()
        return dict(row) if row else None


async def record_with(bridge: BridgeProcess, call_id: str, column: str, what: str) -> dict[str, Any]:
    """The call's record, once the bridge has set its ``column``."""
    record: dict[str, Any] = await poll(lambda: (r := call_record(bridge, call_id)) and r[column] and r, what)
    return record


async def test_outbound_call_reaches_the_trunk_and_audio_comes_back(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, bridge = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550100")
    with Sipp(tmp_path, "-sn", "uas", "-rtp_echo", "-p", str(trunk_port)) as sipp:
        browser.addTrack(SignalTrack(tone(440, 8.0)))
        await browser.setLocalDescription(await browser.createOffer())
        call_id = f"c{uuid.uuid4().hex}"
        await send_call_event(
            alice,
            room_id,
            "m.call.invite",
            call_id,
            "alicedevice",
            lifetime=60000,
            offer={"type": "offer", "sdp": browser.localDescription.sdp},
            capabilities={"m.call.transferee": False, "m.call.dtmf": False},
        )
        answer = await receive_answer(alice, room_id, phone, browser)
        assert answer["call_id"] == call_id
        assert answer["capabilities"]["m.call.dtmf"] is True, "Element shows its dial pad only with this"
        assert str(answer["version"]) == "1" and answer["party_id"]
        await send_call_event(
            alice,
            room_id,
            "m.call.select_answer",
            call_id,
            "alicedevice",
            selected_party_id=answer["party_id"],
        )
        await poll(lambda: browser.iceConnectionState == "completed", "ICE with the bridge")
        audio, rate = await record_audio(browser, 2.0)
        tail = audio[-rate // 2 :]  # the tone went through the relay to sipp, was echoed, and came back
        assert abs(dominant_frequency(tail, rate) - 440) < 15

        await hang_up(alice, room_id, call_id, "alicedevice")
        assert await asyncio.to_thread(sipp.wait) == 0, "sipp saw a complete call: INVITE, 200, ACK, BYE"
        record = await record_with(bridge, call_id, "ended_at", "the call record")
        assert record["direction"] == "outbound" and record["outcome"] == "answered"
        assert record["number"] == "+15005550100" and record["sip_call_id"]
        assert record["codec"] == "PCMU"
        assert json.loads(record["stats"])["passthrough"] is True


async def test_busy_trunk_ends_the_matrix_call_with_user_busy(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, _ = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550101")
    with Sipp(tmp_path, "-sf", str(SIP_SCENARIOS / "uas_busy.xml"), "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        hangups = await wait_for_call_events(alice, room_id, "m.call.hangup", phone)
        assert hangups[0]["content"]["reason"] == "user_busy"
        assert hangups[0]["content"]["call_id"] == call_id
        assert await asyncio.to_thread(sipp.wait) == 0


async def test_a_reused_call_id_neither_takes_over_nor_duplicates_a_live_call(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, bridge = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550103")
    mallory, other_room, other_phone = await user_with_dm(synapse, "+15005550104", "mallory")
    with Sipp(tmp_path, "-sn", "uas", "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        await wait_for_call_events(alice, room_id, "m.call.answer", phone)
        invite = [
            e for e in call_events(alice, room_id, "m.call.invite") if e["content"]["call_id"] == call_id
        ]
        # The same invite again (a client retrying), then another user reusing the ID in their own DM.
        await asyncio.to_thread(alice.send_event, room_id, "m.call.invite", invite[0]["content"])
        await asyncio.to_thread(mallory.send_event, other_room, "m.call.invite", invite[0]["content"])
        refused = await wait_for_call_events(
            mallory, other_room, "m.call.hangup", other_phone, "mallory's refusal"
        )
        assert refused[0]["content"]["call_id"] == call_id
        answer = call_events(alice, room_id, "m.call.answer", phone)[0]["content"]
        assert refused[0]["content"]["party_id"] != answer["party_id"], "nothing of alice's call leaks"
        # Alice's call is still the bridge's: her hang-up reaches the trunk as a BYE.
        await hang_up(alice, room_id, call_id)
        assert await asyncio.to_thread(sipp.wait) == 0, "one call: INVITE, 200, ACK, BYE"
        assert bridge.log_text().count(f"Call {call_id}: m.call.invite → INVITE") == 1


async def test_call_in_a_group_room_is_refused_at_once(call_world: tuple[Synapse, BridgeProcess]) -> None:
    synapse, _ = call_world
    alice = await asyncio.to_thread(synapse.new_user)
    users = [
        (await asyncio.to_thread(alice.thirdparty_user, "m.protocol.pstn", **{"m.id.phone": n}))[0]["userid"]
        for n in ("+15005550102", "+15005550103")
    ]
    room_id = await asyncio.to_thread(alice.create_group, users)
    await poll(lambda: set(users) <= alice.joined_members(room_id), "both phones to join")
    offer = {"type": "offer", "sdp": "v=0\r\n"}
    await send_call_event(alice, room_id, "m.call.invite", "group-call", lifetime=60000, offer=offer)
    hangup = await wait_for_call_events(alice, room_id, "m.call.hangup", what="the refusal")
    assert hangup[0]["content"]["call_id"] == "group-call"
    notices = await poll(
        lambda: [b for b in message_bodies(alice, room_id) if "direct chat" in b], "the notice"
    )
    assert notices


async def answer_invite(
    callee: Client,
    room_id: str,
    invite: dict[str, Any],
    device: RTCPeerConnection,
    party_id: str,
    sound: SignalTrack,
) -> None:
    """The callee's ``device`` (its ``party_id``, sending ``sound``) answers the ``m.call.invite`` content."""
    device.addTrack(sound)
    await device.setRemoteDescription(RTCSessionDescription(invite["offer"]["sdp"], "offer"))
    await device.setLocalDescription(await device.createAnswer())
    answer = {"type": "answer", "sdp": device.localDescription.sdp}
    await send_call_event(callee, room_id, "m.call.answer", invite["call_id"], party_id, answer=answer)


async def test_inbound_call_rings_the_owner_and_the_first_of_two_devices_to_answer_wins(
    call_world: tuple[Synapse, BridgeProcess], sip_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, _ = call_world
    callee = await asyncio.to_thread(synapse.user, "callee")
    with Sipp(
        tmp_path,
        "-sf",
        str(SCENARIOS / "uac_call_from_number.xml"),
        "-s",
        OWNED,
        "-rtp_echo",
        f"127.0.0.1:{sip_port}",
    ) as sipp:
        room_id = await poll(callee.first_invite, "the DM invite from the caller's virtual user")
        await asyncio.to_thread(
            callee.call, "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {}
        )
        invites = await wait_for_call_events(callee, room_id, "m.call.invite")
        invite = invites[0]["content"]
        assert invite["capabilities"]["m.call.dtmf"] is True and invite["lifetime"] > 0
        caller = invites[0]["sender"]
        assert "15005550006" in caller

        await answer_invite(callee, room_id, invite, browser, "phone-device", SignalTrack(tone(660, 6.0)))
        # A second device of the same user answers a moment later: it loses, and learns so from the
        # select_answer naming the first (spec: "Call event life cycle", answered elsewhere).
        laptop = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await answer_invite(callee, room_id, invite, laptop, "laptop-device", SignalTrack(tone(880, 1.0)))
        finally:
            await laptop.close()
        selected = await wait_for_call_events(callee, room_id, "m.call.select_answer", caller)
        assert selected[0]["content"]["selected_party_id"] == "phone-device"
        assert await asyncio.to_thread(sipp.wait) == 0, "sipp got 200, ACKed, talked and hung up"
        hangup = await wait_for_call_events(
            callee, room_id, "m.call.hangup", caller, "m.call.hangup after BYE"
        )
        assert hangup[0]["content"]["reason"] == "user_hangup"
        assert len(call_events(callee, room_id, "m.call.select_answer", caller)) == 1, (
            "one winner, selected once"
        )
        profile = await asyncio.to_thread(callee.profile, caller)
        assert profile["displayname"] == "+1 500-555-0006"


async def test_hanging_up_while_the_phone_rings_cancels_the_invite(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, bridge = call_world
    alice, room_id, _ = await user_with_dm(synapse, "+15005550104")
    with Sipp(tmp_path, "-sf", str(SIP_SCENARIOS / "uas_cancel.xml"), "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        await record_with(bridge, call_id, "sip_call_id", "the INVITE to leave")
        await hang_up(alice, room_id, call_id)
        assert await asyncio.to_thread(sipp.wait) == 0, "sipp got CANCEL, answered 487 and got the ACK"
        record = await record_with(bridge, call_id, "ended_at", "the call record")
        assert record["outcome"] == "unanswered" and record["answered_at"] is None


async def test_an_unanswered_call_ends_when_the_invite_lifetime_runs_out(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, _ = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550105")
    with Sipp(tmp_path, "-sf", str(SIP_SCENARIOS / "uas_cancel.xml"), "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser, lifetime=3000)
        hangups = await wait_for_call_events(alice, room_id, "m.call.hangup", phone, "the bridge to give up")
        assert hangups[0]["content"] | {"call_id": call_id} == hangups[0]["content"]
        assert hangups[0]["content"]["reason"] == "invite_timeout"
        assert await asyncio.to_thread(sipp.wait) == 0, "the trunk got a CANCEL"


async def test_a_trunk_answer_with_a_codec_we_did_not_offer_ends_the_call_on_both_sides(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    """The first answer is checked in the bridge process (the Matrix answer does not wait for the media
    worker): one it cannot use still ends the call, BYE to the trunk and hang-up with a notice."""
    synapse, bridge = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550119")
    with Sipp(tmp_path, "-sf", str(SCENARIOS / "uas_answers_g729.xml"), "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        assert await asyncio.to_thread(sipp.wait) == 0, "sipp got a BYE after its 200 OK"
        hangups = await wait_for_call_events(alice, room_id, "m.call.hangup", phone)
        assert hangups[0]["content"]["reason"] == "user_media_failed"
        assert not call_events(alice, room_id, "m.call.answer", phone)
        assert any("audio could not be used" in b for b in message_bodies(alice, room_id, phone))
        record = await record_with(bridge, call_id, "ended_at", "the record")
        assert record["outcome"] != "interrupted"


async def test_the_phone_putting_the_call_on_hold_and_back_is_answered_and_shown(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, _ = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550106")
    with Sipp(tmp_path, "-sf", str(SCENARIOS / "uas_trunk_holds.xml"), "-p", str(trunk_port)) as sipp:
        await place_call(alice, room_id, browser)
        assert await asyncio.to_thread(sipp.wait) == 0, (
            "sipp saw a=recvonly to its hold and 200 to its resume"
        )
        notices = await poll(
            lambda: [b for b in message_bodies(alice, room_id, phone) if "hold" in b or "resumed" in b],
            "the hold and resume notices",
        )
        assert "on hold" in notices[0]
        await wait_for_call_events(alice, room_id, "m.call.hangup", phone, "the hangup after sipp's BYE")


async def test_holding_from_element_re_invites_the_trunk_and_the_trunk_can_hold_back(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, _ = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550107")
    with Sipp(tmp_path, "-sf", str(SIP_SCENARIOS / "uas_reinvite.xml"), "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        await receive_answer(alice, room_id, phone, browser)
        # Element's hold: the transceiver goes sendonly and the new offer travels in m.call.negotiate.
        browser.getTransceivers()[0].direction = "sendonly"
        await browser.setLocalDescription(await browser.createOffer())
        offer = {"type": "offer", "sdp": browser.localDescription.sdp}
        await send_call_event(alice, room_id, "m.call.negotiate", call_id, lifetime=10000, description=offer)
        replies = await wait_for_call_events(
            alice, room_id, "m.call.negotiate", phone, "the negotiate answer"
        )
        assert replies[0]["content"]["description"]["type"] == "answer"
        assert "a=recvonly" in replies[0]["content"]["description"]["sdp"]
        await browser.setRemoteDescription(
            RTCSessionDescription(replies[0]["content"]["description"]["sdp"], "answer")
        )
        assert await asyncio.to_thread(sipp.wait) == 0, (
            "sipp got our a=sendonly re-INVITE, held and resumed us, hung up"
        )
        await poll(
            lambda: [b for b in message_bodies(alice, room_id, phone) if "resumed" in b], "the resume notice"
        )


def media_metrics(bridge: BridgeProcess) -> dict[str, float]:
    """The bridge's ``telebridge_media_*`` figures, from its Prometheus listener."""
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        name: float(value)
        for name, value in (
            line.split() for line in text.splitlines() if line.startswith("telebridge_media_")
        )
    }


def media_worker_pids(bridge: BridgeProcess) -> list[int]:
    """The bridge's media worker processes (multiprocessing's spawned children, not its resource tracker)."""
    assert bridge.proc is not None
    children: list[int] = []
    for task in Path(f"/proc/{bridge.proc.pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return [
        pid
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    ]


async def test_a_media_worker_killed_mid_call_ends_its_call_on_both_sides_and_shows_in_the_metrics(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, bridge = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550106")
    with Sipp(tmp_path, "-sn", "uas", "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        await wait_for_call_events(alice, room_id, "m.call.answer", phone)
        before = media_metrics(bridge)
        assert before["telebridge_media_workers"] == before["telebridge_media_workers_configured"] == 1
        [worker] = media_worker_pids(bridge)
        os.kill(worker, signal.SIGKILL)
        hangups = await poll(
            lambda: hangups_of(alice, room_id, phone, call_id), "the hang-up after the worker died"
        )
        assert hangups[0]["content"]["reason"] == "ice_failed"
        assert any("media worker crashed" in b for b in message_bodies(alice, room_id, phone))
        assert await asyncio.to_thread(sipp.wait) == 0, "the trunk got its BYE"
        # Counted, and a fresh worker took its place.
        after = await poll(
            lambda: (
                (m := media_metrics(bridge))["telebridge_media_workers"] == 1
                and media_worker_pids(bridge)
                and m
            ),
            "the replacement worker",
        )
        assert (
            after["telebridge_media_worker_deaths_total"]
            == before["telebridge_media_worker_deaths_total"] + 1
        )
        assert media_worker_pids(bridge) != [worker]


# Last in the module: it kills and restarts the module's bridge.
async def test_a_call_cut_by_a_crash_is_hung_up_on_both_sides_after_the_restart(
    call_world: tuple[Synapse, BridgeProcess], trunk_port: int, browser: RTCPeerConnection, tmp_path: Path
) -> None:
    synapse, bridge = call_world
    alice, room_id, phone = await user_with_dm(synapse, "+15005550105")
    with Sipp(tmp_path, "-sn", "uas", "-p", str(trunk_port)) as sipp:
        call_id = await place_call(alice, room_id, browser)
        await wait_for_call_events(alice, room_id, "m.call.answer", phone)
        # The answer and its dialog are one write: once the answer is recorded, so is the dialog.
        record = await record_with(bridge, call_id, "answered_at", "the answer")
        assert record["sip_dialog"], "the dialog is recorded with the answer"
        await asyncio.to_thread(bridge.kill)
        await asyncio.to_thread(bridge.start)
        hangups = await poll(
            lambda: hangups_of(alice, room_id, phone, call_id), "the hang-up after the restart"
        )
        assert hangups[0]["content"]["reason"] == "unknown_error"
        assert any("bridge restarted" in b for b in message_bodies(alice, room_id, phone))
        record = call_record(bridge, call_id)
        assert record is not None and record["outcome"] == "interrupted" and record["ended_at"]
        # The trunk's side too: the dialog stored at the answer gets its BYE from the new process.
        assert await asyncio.to_thread(sipp.wait) == 0, "sipp got a BYE in its dialog and answered it"
