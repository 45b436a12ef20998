"""WebRTC host candidates in a configured UDP port range (for firewalls that open a fixed range)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.webrtc import WebRtcLeg
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer
from tests.media.test_stun import BindingServer


def free_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free UDP ports on 127.0.0.1 (checked, then released)."""
    for start in range(41000, 60000, 97):
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return start, start + size - 1
    raise RuntimeError("no free port range")


async def test_host_candidates_bind_in_the_range_until_it_is_used_up() -> None:
    low, high = free_range(3)
    legs = [WebRtcLeg(lambda *a: None, port_range=(low, high)) for _ in range(4)]
    try:
        for leg in legs[:3]:
            await leg.gather()
        ports = sorted(c.port for leg in legs[:3] for c in leg._ice._connection.local_candidates)
        assert ports == [low, low + 1, high], "one port each, all inside the range"
        with pytest.raises(OSError, match="no free WebRTC port"):
            await legs[3].gather()
    finally:
        for leg in legs:
            await leg.close()


async def test_stun_still_gives_a_server_reflexive_candidate_in_a_range() -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(BindingServer, local_addr=("127.0.0.1", 0))
    stun = RTCIceServer(urls=f"stun:127.0.0.1:{transport.get_extra_info('sockname')[1]}")
    low, high = free_range(4)
    leg = WebRtcLeg(lambda *a: None, ice_servers=[stun], port_range=(low, high))
    try:
        await leg.gather()
        candidates = leg._ice._connection.local_candidates
    finally:
        await leg.close()
        transport.close()
    assert sorted(c.type for c in candidates) == ["host", "srflx"] and server.requests >= 1
    assert all(low <= c.port <= high for c in candidates)


async def test_a_call_connects_on_a_ranged_port(browser: RTCPeerConnection) -> None:
    low, high = free_range(8)
    browser.addTrack(SignalTrack(tone(1000, 3.0)))
    await browser.setLocalDescription(await browser.createOffer())
    config = MediaConfig(webrtc_port_min=low, webrtc_port_max=high)
    call = await MediaCall.outbound(config, browser.localDescription.sdp)
    peer = await RtpPeer.open()
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        await peer.wait_for(20)
        local_port = call.web._ice._connection._nominated[1].local_candidate.port
    finally:
        await call.close()
        peer.close()
    assert low <= local_port <= high
    assert len(peer.received) >= 20
