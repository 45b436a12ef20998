"""The raw SRTP tap into aiortc/aioice: every private name it relies on, and that it really carries media.

If an aiortc or aioice upgrade renames or reshapes any of these, these tests fail first and say which.
"""

from __future__ import annotations

import asyncio
import inspect

import aioice
import aiortc
import pylibsrtp
import pytest
from aioice.ice import CandidatePair, Connection
from aiortc import RTCDtlsTransport, RTCIceGatherer, RTCIceTransport, RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.rtp import build_rtp
from media.webrtc import WebRtcLeg, WebRtcState
from tests.media.peers import RtpPeer, SignalTrack, tone, trunk_answer


def test_pinned_versions() -> None:
    assert aiortc.__version__ == "1.16.0"
    assert aioice.__version__.startswith("0.")


def test_aioice_private_names_used_by_the_tap_exist() -> None:
    assert list(inspect.signature(Connection.data_received).parameters) == ["self", "data", "component"]
    params = inspect.signature(Connection.get_component_candidates).parameters
    assert "component" in params and "addresses" in params
    conn = Connection(ice_controlling=False)
    for name in (
        "_nominated",
        "_local_candidates",
        "_local_candidates_start",
        "_local_candidates_end",
        "_closing",
    ):
        assert hasattr(conn, name), name
    assert "protocol" in inspect.signature(CandidatePair.__init__).parameters
    assert isinstance(CandidatePair.remote_addr, property)


def test_pylibsrtp_private_names_used_by_the_tap_exist_and_work_in_place() -> None:
    """The tap calls libsrtp through pylibsrtp's cffi binding on the session's own context (see
    media/webrtc.py); the result must be what pylibsrtp's public API gives."""
    import os

    from pylibsrtp import Policy, Session, _binding

    key = os.urandom(30)

    def session(direction: int) -> Session:
        return Session(Policy(key=key, ssrc_type=direction))

    packet = bytes(build_rtp(0, 1, 160, 0x1234, bytes(range(160))))
    protected = session(Policy.SSRC_ANY_OUTBOUND).protect(packet)
    assert isinstance(pylibsrtp.SRTP_MAX_TRAILER_LEN, int)
    size = _binding.ffi.new("int *")
    out = _binding.ffi.new("char[]", 1500 + pylibsrtp.SRTP_MAX_TRAILER_LEN)
    _binding.ffi.buffer(out)[0 : len(packet)] = packet
    size[0] = len(packet)
    sender = session(Policy.SSRC_ANY_OUTBOUND)  # kept alive: it owns (and frees) the libsrtp context
    assert _binding.lib.srtp_protect(sender._srtp[0], out, size) == 0
    assert _binding.ffi.buffer(out)[0 : size[0]] == protected
    in_place = bytearray(protected)
    size[0] = len(in_place)
    receiver = session(Policy.SSRC_ANY_INBOUND)
    assert _binding.lib.srtp_unprotect(receiver._srtp[0], _binding.ffi.from_buffer(in_place), size) == 0
    assert bytes(in_place[: size[0]]) == packet


async def test_aiortc_private_names_used_by_the_tap_exist() -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    ice = RTCIceTransport(gatherer)
    assert isinstance(ice._connection, Connection)
    from media.webrtc import shared_certificate

    dtls = RTCDtlsTransport(ice, [shared_certificate()])
    assert dtls._rx_srtp is None and dtls._tx_srtp is None
    assert callable(dtls._set_role)


async def test_tap_replaces_data_received_and_counts_forged_srtp(browser: RTCPeerConnection) -> None:
    browser.addTrack(SignalTrack(tone(440, 2.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call = await MediaCall.outbound(MediaConfig(), browser.localDescription.sdp)
    peer = await RtpPeer.open()
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        leg: WebRtcLeg = call.web
        assert leg.state is WebRtcState.CONNECTED
        connection = leg._ice._connection
        assert connection.data_received == leg._datagram
        assert connection._nominated[1].protocol.datagram_received.__name__ == "datagram_received"
        assert "datagram_received" in vars(connection._nominated[1].protocol)  # our instance override
        assert isinstance(leg._rx, pylibsrtp.Session) and isinstance(leg._tx, pylibsrtp.Session)
        await peer.wait_for(10)
        assert leg.counter_totals()["rtp_received"] >= 10
        # A packet that looks like SRTP but fails authentication is dropped and counted, not raised.
        before = leg.counters.unauthenticated
        leg._datagram(bytes(build_rtp(0, 1, 1, 1, b"\x00" * 170)), 1)
        assert leg.counters.unauthenticated == before + 1
        # Non-RTP datagrams still reach aiortc's queue (DTLS records go there).
        queued = connection._queue.qsize()
        leg._datagram(b"\x17\xfe\xfd" + b"\x00" * 20, 1)
        assert connection._queue.qsize() == queued + 1
    finally:
        await call.close()
        peer.close()


async def test_peer_going_away_ends_the_leg_visibly(browser: RTCPeerConnection) -> None:
    browser.addTrack(SignalTrack(tone(440, 1.0)))
    await browser.setLocalDescription(await browser.createOffer())
    events: list[tuple[str, dict[str, object]]] = []
    call = await MediaCall.outbound(
        MediaConfig(), browser.localDescription.sdp, lambda k, d: events.append((k, d))
    )
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        await browser.close()  # sends DTLS close_notify
        for _ in range(100):
            if any(kind == "closed" for kind, _ in events):
                break
            await asyncio.sleep(0.05)
        assert call.closed
        assert events[-1][0] == "closed"
        assert "webrtc" in str(events[-1][1]["reason"])
    finally:
        await call.close()


async def test_ice_without_a_reachable_peer_fails_cleanly() -> None:
    config = MediaConfig(connect_timeout=1.0)
    offer = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n"
        "a=setup:actpass\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    events: list[str] = []
    call = await MediaCall.outbound(config, offer, lambda k, d: events.append(k))
    try:
        await asyncio.wait_for(call.web.connected.wait(), 10)
        assert call.web.state is WebRtcState.FAILED
        for _ in range(40):
            if "closed" in events:
                break
            await asyncio.sleep(0.05)
        assert events == ["closed"]
    finally:
        await call.close()


async def test_browser_vanishing_ends_the_leg_by_ice_consent(
    browser: RTCPeerConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7675: when consent checks go unanswered the leg ends (aioice's ~30 s, shortened here)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    browser.addTrack(SignalTrack(tone(440, 10.0)))
    await browser.setLocalDescription(await browser.createOffer())
    events: list[tuple[str, dict[str, object]]] = []
    call = await MediaCall.outbound(
        MediaConfig(), browser.localDescription.sdp, lambda k, d: events.append((k, d))
    )
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        # The browser's network goes away without a goodbye: its sockets close, no DTLS alert is sent.
        ice_connection = browser.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
        for protocol in list(ice_connection._protocols):
            protocol.transport.close()
        for _ in range(200):  # bounded: 10 s
            if any(kind == "closed" for kind, _ in events):
                break
            await asyncio.sleep(0.05)
        assert events and events[-1][0] == "closed"
        assert events[-1][1]["reason"] == "webrtc: ICE consent expired"
        assert call.web.close_reason == events[-1][1]["reason"].removeprefix("webrtc: ")
    finally:
        await call.close()
