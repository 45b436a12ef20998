"""TURN (RFC 8656) when configured, against coturn on 127.0.0.1: relayed candidates are gathered, and with
``ice_relay_only`` a call's media flows through the TURN server and nowhere else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media import g711
from media.call import MediaCall, MediaConfig
from media.webrtc import WebRtcLeg
from tests.media.peers import RtpPeer, SignalTrack, dominant_frequency, tone, trunk_answer
from tests.peers.turn import Coturn


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    server = Coturn(tmp_path_factory.mktemp("coturn"))
    try:
        yield server
    finally:
        server.stop()


def config(coturn: Coturn, *, relay_only: bool) -> MediaConfig:
    return MediaConfig(ice_servers=[coturn.ice_server], ice_relay_only=relay_only)


async def test_a_configured_turn_server_adds_a_relayed_candidate(coturn: Coturn) -> None:
    leg = WebRtcLeg(lambda *a: None, ice_servers=config(coturn, relay_only=False).rtc_ice_servers())
    try:
        await leg.gather()
        types = sorted(c.type for c in leg._ice._connection.local_candidates)
    finally:
        await leg.close()
    assert types == ["host", "relay"]


async def test_relay_only_call_media_flows_through_the_turn_server(
    coturn: Coturn, browser: RTCPeerConnection
) -> None:
    browser.addTrack(SignalTrack(tone(1000, 4.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call = await MediaCall.outbound(config(coturn, relay_only=True), browser.localDescription.sdp)
    peer = await RtpPeer.open()
    try:
        assert call.webrtc_local_sdp is not None
        offered = [m for m in call.webrtc_local_sdp.media[0].get_all("candidate")]
        assert offered and all(" typ relay" in c for c in offered), offered
        assert all("raddr 0.0.0.0" in c for c in offered), "the host address stays hidden (RFC 8445 §5.1.1.2)"
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        await asyncio.wait_for(call.web.connected.wait(), 20)
        pair = call.web._ice._connection._nominated[1]
        assert pair.local_candidate.type == "relay"
        await peer.wait_for(60)  # the browser's tone, relayed by coturn, then by us to the trunk
    finally:
        await call.close()
        peer.close()
    audio = np.concatenate([g711.ulaw_decode(data[12:]) for _, data, _ in peer.received[-25:]])
    assert abs(dominant_frequency(audio, 8000) - 1000) < 15
    log = coturn.log_text()
    assert "ALLOCATE processed, success" in log and "CHANNEL_BIND processed, success" in log
