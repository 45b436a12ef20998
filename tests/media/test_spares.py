"""Call setup on spare calls: legs bound ahead of need, both outbound SDPs made in the bridge process, the
worker adopting the call while the trunk rings (media/spares.py, MediaService.create_outbound)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig, PreparedCall, outbound_sdp
from media.service import MediaError, MediaEvent, MediaService, _Worker
from media.spares import SpareCalls
from media.worker import LATER, WorkerServer
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer


async def browser_offer() -> tuple[RTCPeerConnection, str]:
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(SignalTrack(tone(1000, 3.0)))
    await browser.setLocalDescription(await browser.createOffer())
    return browser, browser.localDescription.sdp


async def until(condition: Any, what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def worker_with_spares(
    count: int, **config: Any
) -> AsyncIterator[tuple[MediaService, _Worker, list[MediaEvent]]]:
    """A started service with one worker holding ``count`` spare calls, and the events it publishes."""
    service = MediaService(MediaConfig(spare_calls=count, **config), workers=1)
    await service.start()
    events: list[MediaEvent] = []
    service.subscribe(events.append)
    worker = service._workers[0]
    try:
        await until(lambda: len(worker.spares) == count, f"{count} spare call(s)")
        yield service, worker, events
    finally:
        await service.stop()


async def test_the_bridge_and_the_worker_make_the_same_outbound_sdp_from_a_prepared_call(
    loopback_ice: None,
) -> None:
    browser, offer = await browser_offer()
    call = await MediaCall.prepare(MediaConfig())
    try:
        described = call.describe()
        made_elsewhere = outbound_sdp(MediaConfig(), described, offer, ("11", "22"))
        call.answer_webrtc_offer(offer, ("11", "22"))
        assert str(call.webrtc_local_sdp) == str(made_elsewhere.webrtc_answer)
        assert str(call.trunk_local_sdp) == str(made_elsewhere.trunk_offer)
        assert call.trunk is not None and f"m=audio {call.trunk.local_port} " in str(call.trunk_local_sdp)
    finally:
        await call.close()
        await browser.close()


async def test_outbound_setup_on_a_spare_returns_before_the_worker_replies_and_the_call_connects(
    loopback_ice: None,
) -> None:
    browser, offer = await browser_offer()
    peer = await RtpPeer.open()
    try:
        async with worker_with_spares(2) as (service, worker, events):
            setup = await service.create_outbound(offer)
            # No loop turn passed: the worker's reply to the adoption cannot have been read yet.
            assert worker.pending, "create_outbound waited for the worker"
            assert len(worker.spares) == 1
            await browser.setRemoteDescription(RTCSessionDescription(setup.webrtc_sdp, "answer"))
            applied = service.set_trunk_answer_soon(setup.call_id, setup.trunk_sdp, trunk_answer(peer.port))
            await applied
            await until(lambda: any(e.kind == "connected" for e in events), "ICE and DTLS")
            await peer.wait_for(10)
            assert (await service.stats(setup.call_id))["passthrough"] is True
            await until(lambda: len(worker.spares) == 2, "the spare replaced")
            assert await worker.request("count") == 1
    finally:
        await browser.close()
        peer.close()


async def test_a_spare_the_worker_no_longer_has_ends_the_call_with_a_closed_event(loopback_ice: None) -> None:
    browser, offer = await browser_offer()
    try:
        async with worker_with_spares(1) as (service, worker, events):
            lost = worker.spares._ready[0][1]
            await worker.request("release", prepared=lost.call_id)
            setup = await service.create_outbound(offer)
            assert setup.call_id == lost.call_id
            await until(lambda: any(e.kind == "closed" for e in events), "the closed event")
            [closed] = [e for e in events if e.kind == "closed"]
            assert closed.call_id == setup.call_id and "media setup failed" in closed.data["reason"]
            assert service.call_count == 0 and await worker.request("count") == 0
    finally:
        await browser.close()


async def test_an_offer_without_a_common_codec_is_refused_in_the_bridge_and_the_spare_released(
    loopback_ice: None,
) -> None:
    browser, offer = await browser_offer()
    try:
        async with worker_with_spares(1, webrtc_codecs=()) as (service, worker, _):
            taken = worker.spares._ready[0][1].call_id
            with pytest.raises(MediaError, match="NegotiationError"):
                await service.create_outbound(offer)
            assert service.call_count == 0
            with pytest.raises(MediaError, match="no prepared call"):
                await worker.request("outbound", prepared=taken, sdp=offer)
    finally:
        await browser.close()


async def test_a_trunk_answer_that_does_not_fit_our_offer_is_refused_without_asking_the_worker() -> None:
    service = MediaService(workers=1)  # never started: the check is made in this process
    offer = outbound_sdp(
        MediaConfig(),
        PreparedCall("c", ("127.0.0.1", 9), (), 4000),
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 5000 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n",
    ).trunk_offer
    no_common_codec = (
        "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
    )
    with pytest.raises(MediaError, match="NegotiationError"):
        service.set_trunk_answer_soon("c", str(offer), no_common_codec)


async def test_requests_that_need_no_await_are_answered_in_the_turn_they_are_read(loopback_ice: None) -> None:
    server = WorkerServer(MediaConfig(), lambda message: None)
    prepared = await server.handle("prepare", {})
    assert set(prepared) == {"call_id", "web_address", "web_attributes", "trunk_port"}
    assert server.answer_now("count", {}) == 0
    browser, offer = await browser_offer()
    try:
        result = server.answer_now("outbound", {"prepared": prepared["call_id"], "sdp": offer})
        assert result["call_id"] == prepared["call_id"] and server.answer_now("count", {}) == 1
        assert server.answer_now("stats", {"call_id": result["call_id"]})["webrtc_state"] == "connecting"
        assert server.answer_now("close", {"call_id": result["call_id"]}) is LATER
        assert server.answer_now("outbound", {"sdp": offer}) is LATER  # no prepared call: binds, awaits
    finally:
        await server.close_all("test over")
        await browser.close()


# SpareCalls alone, with a stand-in worker ------------------------------------------------------------


class StandInWorker:
    def __init__(self, fail: bool = False) -> None:
        self.prepared = 0
        self.released: list[str] = []
        self.fail = fail

    async def prepare(self) -> PreparedCall:
        await asyncio.sleep(0)
        if self.fail:
            raise MediaError("OSError: no free RTP port pair")
        self.prepared += 1
        return PreparedCall(f"spare{self.prepared}", ("127.0.0.1", 9), (), 4000)


async def test_spares_are_taken_oldest_first_and_replaced() -> None:
    worker = StandInWorker()
    spares = SpareCalls(2, worker.prepare, worker.released.append)
    spares.start()
    await until(lambda: len(spares) == 2, "two spares")
    first = spares.take()
    assert first is not None and first.call_id == "spare1"
    await until(lambda: len(spares) == 2, "a replacement")
    assert [spares.take().call_id, spares.take().call_id] == ["spare2", "spare3"]  # type: ignore[union-attr]
    assert spares.take() is None  # none ready: the setup binds its own
    await until(lambda: len(spares) == 2, "replacements")
    assert sorted(spares.stop()) == ["spare4", "spare5"] and len(spares) == 0
    assert worker.released == []


async def test_spares_past_their_age_are_released_not_handed_out() -> None:
    worker = StandInWorker()
    now = [100.0]
    spares = SpareCalls(1, worker.prepare, worker.released.append, max_age=60, clock=lambda: now[0])
    spares.start()
    await until(lambda: len(spares) == 1, "a spare")
    now[0] += 61
    assert spares.take() is None and worker.released == ["spare1"]
    await until(lambda: len(spares) == 1, "its replacement")
    taken = spares.take()
    assert taken is not None and taken.call_id == "spare2"
    spares.stop()


async def test_a_failing_worker_is_asked_again_only_after_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("media.spares.RETRY_AFTER", 0.1)
    worker = StandInWorker(fail=True)
    calls = 0
    original = worker.prepare

    async def counting() -> PreparedCall:
        nonlocal calls
        calls += 1
        return await original()

    spares = SpareCalls(3, counting, worker.released.append)
    spares.start()
    await asyncio.sleep(0.02)
    assert calls == 3 and spares.take() is None and calls == 3  # no retry inside the pause
    worker.fail = False
    await until(lambda: len(spares) == 3, "spares after the pause", 1.0)
    spares.stop()


async def test_a_setup_finding_none_ready_waits_for_the_first_being_prepared() -> None:
    worker = StandInWorker()
    gate = asyncio.Event()
    original = worker.prepare

    async def slow() -> PreparedCall:
        await gate.wait()
        return await original()

    spares = SpareCalls(2, slow, worker.released.append)
    spares.start()
    assert spares.take() is None
    waiting = asyncio.ensure_future(spares.next())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    taken = await asyncio.wait_for(waiting, 1)
    assert taken is not None and taken.call_id == "spare1"
    spares.stop()


async def test_waiting_for_a_spare_ends_with_none_when_the_worker_goes() -> None:
    never = asyncio.Event()

    async def stuck() -> PreparedCall:
        await never.wait()
        raise AssertionError("unreachable")

    spares = SpareCalls(1, stuck, lambda call_id: None)
    spares.start()
    waiting = asyncio.ensure_future(spares.next())
    await asyncio.sleep(0.01)
    spares.stop()
    assert await asyncio.wait_for(waiting, 1) is None


async def test_an_inbound_setup_takes_a_spare_and_the_browser_can_answer_it(loopback_ice: None) -> None:
    peer = await RtpPeer.open()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(SignalTrack(tone(1000, 3.0)))
    try:
        async with worker_with_spares(1) as (service, worker, _):
            spare = worker.spares._ready[0][1].call_id
            setup = await service.create_inbound(trunk_answer(peer.port))  # a trunk offer, as sipp sends
            assert setup.call_id == spare
            assert "a=setup:actpass" in setup.webrtc_sdp
            await browser.setRemoteDescription(RTCSessionDescription(setup.webrtc_sdp, "offer"))
            await browser.setLocalDescription(await browser.createAnswer())
            await service.set_webrtc_answer(setup.call_id, browser.localDescription.sdp)
            await peer.wait_for(10)
            assert (await service.stats(setup.call_id))["webrtc_state"] == "connected"
    finally:
        await browser.close()
        peer.close()
