"""RTCP terminated per leg with real peers: aiortc's reports become call stats; the trunk gets ours."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.rtcp import RR, SDES, SR, parse_compound
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer


async def test_reports_both_ways(browser: RTCPeerConnection) -> None:
    browser.addTrack(SignalTrack(tone(1000, 6.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call = await MediaCall.outbound(MediaConfig(rtcp_interval=0.5), browser.localDescription.sdp)
    peer, rtcp_peer = await RtpPeer.open(), await RtpPeer.open()
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        answer = trunk_answer(peer.port) + f"a=rtcp:{rtcp_peer.port}\r\n"
        call.set_trunk_remote_sdp(answer)
        await asyncio.wait_for(call.web.connected.wait(), 15)
        assert call.trunk is not None
        track = browser.getReceivers()[0].track
        from media import g711

        payload = g711.ulaw_encode(tone(700, 4.0, rate=8000))
        playing = asyncio.ensure_future(
            peer.play(
                [payload[i : i + 160] for i in range(0, len(payload), 160)],
                ("127.0.0.1", call.trunk.local_port),
            )
        )
        stats: dict = {}
        for _ in range(200):  # bounded: at most ~6 s of media
            await asyncio.wait_for(track.recv(), 5)
            stats = call.stats()["rtcp"]
            if stats["webrtc"]["rtt_ms"] is not None and len(rtcp_peer.other) >= 2:
                break
        await playing
    finally:
        await call.close()
        peer.close()
        rtcp_peer.close()
    web = stats["webrtc"]
    # aiortc reported on the stream we send it (its RR/SR blocks carry our SSRC), giving an RTT.
    assert web["reports_received"] >= 1
    assert web["rtt_ms"] is not None and 0 <= web["rtt_ms"] < 1000
    assert web["remote_cumulative_lost"] == 0
    assert web["packets_sent"] > 0 and web["packets_received"] > 0
    # The trunk got compound reports from our trunk SSRC: SR (we send to it) + SDES.
    kinds = [[p[0] for p in parse_compound(data) or []] for data in rtcp_peer.other]
    assert kinds and all(k[-1] == SDES and k[0] in (SR, RR) for k in kinds)
    assert any(k[0] == SR for k in kinds)
    assert all(int.from_bytes(data[4:8], "big") == call.trunk_ssrc for data in rtcp_peer.other)
