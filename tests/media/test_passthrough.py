"""Passthrough relay with real peers: aiortc as the browser, a plain RTP socket as the trunk."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from media import g711
from media.call import MediaCall, MediaConfig
from sdp import SessionDescription
from tests.media.peers import RtpPeer, SignalTrack, dominant_frequency, rms_dbfs, tone, trunk_answer


async def connect_outbound(
    browser: RTCPeerConnection, signal: np.ndarray, config: MediaConfig | None = None
) -> tuple[MediaCall, RtpPeer]:
    """A call from the stand-in browser, sending ``signal``, to a trunk answering PCMU, connected."""
    browser.addTrack(SignalTrack(signal))
    await browser.setLocalDescription(await browser.createOffer())
    call = await MediaCall.outbound(config or MediaConfig(), browser.localDescription.sdp)
    await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
    peer = await RtpPeer.open()
    call.set_trunk_remote_sdp(trunk_answer(peer.port))
    await asyncio.wait_for(call.web.connected.wait(), 15)
    return call, peer


async def test_browser_tone_reaches_trunk_and_trunk_tone_reaches_browser_with_zero_decodes(
    browser: RTCPeerConnection,
) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 3.0))
    try:
        assert call.relay is not None and call.relay.passthrough
        decodes_before = g711.DECODE_CALLS.value
        await peer.wait_for(100)
        # Trunk → browser: a 700 Hz tone for 2 s from the trunk side, sent to our trunk port.
        assert call.trunk is not None
        received_track = browser.getReceivers()[0].track
        payload_tone = g711.ulaw_encode(tone(700, 2.0, rate=8000))
        payloads = [payload_tone[i : i + 160] for i in range(0, len(payload_tone), 160)]
        playing = asyncio.ensure_future(peer.play(payloads, ("127.0.0.1", call.trunk.local_port)))
        frames = []
        for _ in range(80):
            frame = await asyncio.wait_for(received_track.recv(), 5)
            frames.append(frame.to_ndarray().reshape(-1))
        sample_rate = frame.sample_rate
        await playing
        relay_decodes = g711.DECODE_CALLS.value - decodes_before
    finally:
        await call.close()
        peer.close()
    assert relay_decodes == 0

    # What the trunk got: PCMU from our SSRC, payload type 0, consecutive sequence numbers.
    headers = [h for h, _, _ in peer.received]
    assert {h.payload_type for h in headers} == {0}
    assert {h.ssrc for h in headers} == {call.trunk_ssrc}
    seqs = [h.sequence_number for h in headers[:100]]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    audio = np.concatenate([np.frombuffer(data[12:], dtype=np.uint8) for _, data, _ in peer.received[20:100]])
    samples = g711._ULAW_DECODE[audio]
    assert abs(dominant_frequency(samples, 8000) - 1000) < 20
    assert abs(rms_dbfs(samples) - rms_dbfs(tone(1000, 1.0))) < 1.5

    # What the browser got: the 700 Hz tone at the level sent (skip jitter-buffer start-up frames).
    heard = np.concatenate(frames[-40:])
    if heard.dtype != np.int16:
        heard = heard.astype(np.int16)
    assert abs(dominant_frequency(heard, sample_rate) - 700) < 20
    assert abs(rms_dbfs(heard) - rms_dbfs(tone(700, 1.0))) < 1.5


async def test_trunk_reinvite_hold_and_resume(browser: RTCPeerConnection) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 6.0))
    try:
        await peer.wait_for(20)
        assert call.trunk_local_sdp is not None
        version = call.trunk_local_sdp.origin.session_version
        # The trunk puts us on hold (it will only send): we answer recvonly and stop sending.
        held = call.update_trunk_offer(trunk_answer(peer.port) + "a=sendonly\r\n")
        answer = SessionDescription.parse(held)
        assert answer.media[0].direction == "recvonly"
        assert answer.origin.session_version == version + 1
        await asyncio.sleep(0.1)
        during = len(peer.received)
        await asyncio.sleep(0.4)
        assert len(peer.received) == during
        assert call.relay is not None and call.relay.to_trunk.suppressed > 0
        # Resume: media flows again, continuing the sequence instead of jumping over the hold.
        resumed = call.update_trunk_offer(trunk_answer(peer.port))
        assert SessionDescription.parse(resumed).media[0].direction == "sendrecv"
        await peer.wait_for(during + 10)
    finally:
        await call.close()
        peer.close()
    first_after = peer.received[during][0]
    last_before = peer.received[during - 1][0]
    assert first_after.sequence_number == (last_before.sequence_number + 1) & 0xFFFF
    assert first_after.marker
    assert first_after.timestamp - last_before.timestamp >= 8000 * 0.4


async def test_our_trunk_reoffer_holds_and_resumes(browser: RTCPeerConnection) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 4.0))
    try:
        await peer.wait_for(10)
        assert call.trunk_local_sdp is not None
        version = call.trunk_local_sdp.origin.session_version
        offer = SessionDescription.parse(call.trunk_reoffer("sendonly"))
        assert offer.media[0].direction == "sendonly"
        assert offer.media[0].formats == ["0", "101"]  # the codec in use and events only
        assert offer.origin.session_version == version + 1
        call.set_trunk_remote_sdp(trunk_answer(peer.port) + "a=recvonly\r\n")
        assert call.relay is not None
        assert call.relay.to_web.muted and not call.relay.to_trunk.muted
        before = len(peer.received)
        await peer.wait_for(before + 10)  # we still send to the held trunk (it said recvonly)
        call.trunk_reoffer("sendrecv")
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        assert not call.relay.to_web.muted
    finally:
        await call.close()
        peer.close()


async def test_browser_renegotiates_to_sendonly_and_we_stop_sending_to_it(browser: RTCPeerConnection) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 4.0))
    try:
        await peer.wait_for(10)
        browser.getTransceivers()[0].direction = "sendonly"
        await browser.setLocalDescription(await browser.createOffer())
        answer = call.update_webrtc_offer(browser.localDescription.sdp)
        parsed = SessionDescription.parse(answer)
        assert parsed.media[0].direction == "recvonly"
        assert parsed.media[0].get("setup") == "active"  # our DTLS role is kept
        await browser.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert call.relay is not None and call.relay.to_web.muted and not call.relay.to_trunk.muted
        before = len(peer.received)
        await peer.wait_for(before + 10)  # the browser's audio still reaches the trunk
        assert len(peer.received) >= before + 10
    finally:
        await call.close()
        peer.close()
