"""The bridge-facing API, in-process and with worker processes (including one crashing)."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media import fastpath
from media.dtmf import DtmfGenerator
from media.rtp import build_rtp
from media.service import MediaError, MediaEvent, MediaService
from sdp import SessionDescription
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer
from tests.sdp.offers import SIPP_G711_OFFER


async def start_browser_call(
    service: MediaService, seconds: float = 3.0
) -> tuple[str, RTCPeerConnection, RtpPeer]:
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(SignalTrack(tone(1000, seconds)))
    await browser.setLocalDescription(await browser.createOffer())
    setup = await service.create_outbound(browser.localDescription.sdp)
    await browser.setRemoteDescription(RTCSessionDescription(setup.webrtc_sdp, "answer"))
    peer = await RtpPeer.open()
    await service.set_trunk_answer(setup.call_id, trunk_answer(peer.port))
    return setup.call_id, browser, peer


async def test_in_process_outbound_call_reports_digits_stats_and_close(loopback_ice: None) -> None:
    service = MediaService(workers=0)
    await service.start()
    events: list[MediaEvent] = []
    service.subscribe(events.append)
    call_id, browser, peer = await start_browser_call(service)
    try:
        await peer.wait_for(20)
        assert peer.received, "no media reached the trunk"
        stats = await service.stats(call_id)
        assert stats["passthrough"] is True
        assert stats["counters"]["webrtc"]["rtp_received"] >= 20
        assert set(stats["rtcp"]) == {"webrtc", "trunk"}
        await service.close(call_id)
        assert [e.kind for e in events if e.call_id == call_id][-1] == "closed"
        assert service.call_count == 0
        with pytest.raises(MediaError):
            await service.stats(call_id)
    finally:
        await browser.close()
        peer.close()
        await service.stop()


async def test_inbound_call_from_a_sipp_style_offer_gets_answer_and_webrtc_offer(loopback_ice: None) -> None:
    service = MediaService(workers=0)
    await service.start()
    events: list[MediaEvent] = []
    service.subscribe(events.append)
    peer = await RtpPeer.open()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        setup = await service.create_inbound(SIPP_G711_OFFER.replace("m=audio 6000", f"m=audio {peer.port}"))
        trunk = SessionDescription.parse(setup.trunk_sdp)
        assert trunk.media[0].formats == ["0", "101"]  # PCMU and its events, as offered
        offer = SessionDescription.parse(setup.webrtc_sdp)
        assert offer.media[0].proto == "UDP/TLS/RTP/SAVPF"
        assert offer.media[0].get("setup") == "actpass"
        assert offer.media[0].rtpmaps()[0].encoding == "PCMU"
        browser.addTrack(SignalTrack(tone(500, 2.0)))
        await browser.setRemoteDescription(RTCSessionDescription(setup.webrtc_sdp, "offer"))
        await browser.setLocalDescription(await browser.createAnswer())
        await service.set_webrtc_answer(setup.call_id, browser.localDescription.sdp)
        await peer.wait_for(20)
        assert len(peer.received) >= 20
        assert {h.payload_type for h, _, _ in peer.received} == {0}
        # The trunk presses 9: the bridge hears about it.
        port = trunk.media[0].port
        for j, (_, marker, payload) in enumerate(DtmfGenerator(8000).packets("9", 60)):
            peer.send_to(build_rtp(101, 10 + j, 4000, 0x99, payload, marker), ("127.0.0.1", port))
        for _ in range(50):
            if any(e.kind == "digit" for e in events):
                break
            await asyncio.sleep(0.02)
        assert [e.data for e in events if e.kind == "digit"] == [
            {"leg": "trunk", "digit": "9", "relayed": False}
        ]
    finally:
        await browser.close()
        peer.close()
        await service.stop()


async def test_start_up_log_says_what_relays_and_transcodes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="media.service")
    service = MediaService(workers=0)
    await service.start()
    await service.stop()
    relay = "the C pump; C transcoder" if fastpath.available() else "the Python relay"
    assert any(
        r.getMessage().startswith(f"media: in the bridge process; {relay}") and "libopus" in r.getMessage()
        for r in caplog.records
    ), caplog.text


async def test_bad_offer_is_a_media_error(loopback_ice: None) -> None:
    service = MediaService(workers=0)
    await service.start()
    try:
        with pytest.raises(MediaError):
            await service.create_outbound("not sdp")
        with pytest.raises(MediaError):
            await service.create_inbound(SIPP_G711_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18"))
    finally:
        await service.stop()


@pytest.mark.slow
async def test_worker_crash_ends_only_its_calls_visibly(loopback_ice: None) -> None:
    service = MediaService(workers=2)
    await service.start()
    events: list[MediaEvent] = []
    service.subscribe(events.append)
    browsers: list[RTCPeerConnection] = []
    peers: list[RtpPeer] = []
    try:
        calls = []
        for _ in range(2):
            call_id, browser, peer = await start_browser_call(service, seconds=6.0)
            calls.append(call_id)
            browsers.append(browser)
            peers.append(peer)
        owners = [service._owner[c] for c in calls]
        assert owners[0] is not owners[1]  # least-loaded placement spreads them
        for peer in peers:
            await peer.wait_for(10)
            assert len(peer.received) >= 10
        victim = owners[0]
        assert victim is not None
        with pytest.raises(MediaError):
            await victim.request("crash")
        assert [(e.call_id, e.kind, e.data) for e in events if e.kind == "closed"] == [
            (calls[0], "closed", {"reason": "media worker crashed"})
        ]
        # The other call keeps flowing.
        before = len(peers[1].received)
        await peers[1].wait_for(before + 10)
        assert len(peers[1].received) >= before + 10
        assert service.call_count == 1
        # A fresh worker took the dead one's place and takes calls; the death is counted for monitoring.
        assert service.workers_running == 2 and service.worker_deaths == 1
        assert await victim.request("count") == 0
    finally:
        for browser in browsers:
            await browser.close()
        for peer in peers:
            peer.close()
        await service.stop()


async def test_worker_process_call_connects_sends_dtmf_reports_stats_and_closes(loopback_ice: None) -> None:
    service = MediaService(workers=1)
    await service.start()
    events: list[MediaEvent] = []
    service.subscribe(events.append)
    call_id, browser, peer = await start_browser_call(service)
    try:
        for _ in range(100):
            if any(e.kind == "connected" for e in events):
                break
            await asyncio.sleep(0.05)
        assert [e.data for e in events if e.kind == "connected"] == [{"leg": "webrtc"}]
        await peer.wait_for(10)
        await service.send_dtmf(call_id, "7", leg="trunk", duration_ms=60)
        await asyncio.sleep(0.1)
        stats = await service.stats(call_id)
        assert stats["passthrough"] is True
        assert stats["relay"] == ("c" if fastpath.available() else "python")
        assert stats["counters"]["trunk"]["sent"] >= 10
        await service.close(call_id)
        for _ in range(50):
            if any(e.kind == "closed" for e in events):
                break
            await asyncio.sleep(0.02)
    finally:
        await browser.close()
        peer.close()
        await service.stop()
    assert sum(1 for h, _, _ in peer.received if h.payload_type == 101) >= 4  # 1 start, updates, 3 ends
    assert [e.data["reason"] for e in events if e.kind == "closed"] == ["hangup"]


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no POSIX scheduling API")
async def test_workers_take_real_time_priority_when_configured() -> None:
    """calls.media_realtime_priority: the worker runs under SCHED_FIFO at that priority (tests run as
    root; without CAP_SYS_NICE the worker logs that it was refused and runs normally)."""
    service = MediaService(workers=1, realtime_priority=7)
    plain = MediaService(workers=1)
    await service.start()
    await plain.start()
    try:
        for svc, policy, priority in ((service, os.SCHED_FIFO, 7), (plain, os.SCHED_OTHER, 0)):
            process = svc._workers[0].process
            assert process is not None and process.pid is not None
            assert await svc._workers[0].request("count") == 0  # started and serving
            assert os.sched_getscheduler(process.pid) == policy
            assert os.sched_getparam(process.pid).sched_priority == priority
    finally:
        await service.stop()
        await plain.stop()
