"""ICE roles when the bridge makes the WebRTC offer (inbound calls).

The browser answers and starts its connectivity checks at once; its answer reaches the bridge only after a
trip through the homeserver (100 ms or more). Our leg must already be the controlling agent when those
checks arrive (RFC 8445 §6.1.1), or a 487 role conflict leaves both sides waiting for each other.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.webrtc import WebRtcState
from tests.media.peers import RtpPeer, trunk_answer


async def late_answer(delay: float) -> tuple[WebRtcState, str]:
    trunk = await RtpPeer.open()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    call = await MediaCall.inbound(MediaConfig(), trunk_answer(trunk.port))
    try:
        assert call.webrtc_local_sdp is not None
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "offer"))
        await browser.setLocalDescription(await browser.createAnswer())  # the browser's checks start here
        await asyncio.sleep(delay)  # ...while its answer travels through Matrix
        call.set_webrtc_answer(browser.localDescription.sdp)
        await asyncio.wait_for(call.web.connected.wait(), 20)
        return call.web.state, browser.iceConnectionState
    finally:
        await call.close()
        await browser.close()
        trunk.close()


async def test_the_bridge_controls_ice_when_the_browser_checks_before_its_answer_arrives(
    loopback_ice: None,
) -> None:
    # Four calls: with the wrong initial role each one fails by the tie-breakers' draw (one in two).
    results = await asyncio.gather(*(late_answer(0.3) for _ in range(4)))
    assert all(web is WebRtcState.CONNECTED for web, _ in results), results
    assert all(browser in ("connected", "completed") for _, browser in results), results
