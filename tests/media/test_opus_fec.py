"""Opus in-band FEC follows the loss the browser reports about our stream (RFC 7587 §3.1, RFC 3550 §6.4)."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.transcoder import Transcoder
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer


def test_expected_loss_follows_the_reported_fraction_within_bounds() -> None:
    transcoder = Transcoder("pcmu", "opus")
    encoder = transcoder.opus_encoder
    assert encoder is not None and encoder.expected_loss == 1  # the starting assumption
    for reported, expected in ((0.12, 12), (0.0, 1), (0.9, 25), (0.034, 3)):
        transcoder.adapt_to_loss(reported)
        assert encoder.expected_loss == expected
    assert encoder.encode(np.zeros(160, dtype=np.int16)), "still encodes after the change"
    Transcoder("opus", "pcmu").adapt_to_loss(0.5)  # nothing to adapt towards G.711: no error


def receiver_report(sender_ssrc: int, about_ssrc: int, fraction_lost: int) -> bytes:
    """An RTCP RR (RFC 3550 §6.4.2) with one report block about ``about_ssrc``."""
    header = struct.pack("!BBHI", 0x81, 201, 7, sender_ssrc)
    block = struct.pack("!IB3sIIII", about_ssrc, fraction_lost, (40).to_bytes(3, "big"), 1000, 0, 0, 0)
    return header + block


async def test_a_browser_reporting_loss_gets_more_fec(browser: RTCPeerConnection) -> None:
    browser.addTrack(SignalTrack(tone(1000, 4.0)))
    await browser.setLocalDescription(await browser.createOffer())
    config = MediaConfig(webrtc_codecs=("opus",), rtcp_interval=0.2)  # Opus to the browser: transcoding
    call = await MediaCall.outbound(config, browser.localDescription.sdp)
    peer = await RtpPeer.open()
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        # Our answer tells the browser it may send narrow-band: there is nothing above 4 kHz to relay.
        assert call.webrtc_local_sdp is not None and call.web_params is not None
        opus_fmtp = call.webrtc_local_sdp.media[0].fmtp(call.web_params.codec.payload_type) or ""
        assert "maxplaybackrate=8000" in opus_fmtp and "useinbandfec=1" in opus_fmtp
        relay = call.relay
        assert relay is not None and relay.to_web.transcoder is not None  # C or Python, as built
        encoder = relay.to_web.transcoder.opus_encoder  # type: ignore[attr-defined]
        assert encoder is not None
        # What a browser losing a fifth of our packets reports (fraction lost is in 1/256ths).
        relay.rtcp_from_web(receiver_report(0x1234, relay.web_rtcp.ssrc, 51), 0.0)
        for _ in range(50):  # the next report interval picks it up (bounded: ~5 s)
            if encoder.expected_loss == 20:
                break
            await asyncio.sleep(0.1)
        assert encoder.expected_loss == 20
    finally:
        await call.close()
        peer.close()
