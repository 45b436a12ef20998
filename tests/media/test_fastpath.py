"""The C relay (media/_fastpath.c, media/fastpath.py): same results as the Python relay, on real sockets.

The state types are checked against their Python twins on generated packet sequences; the pump is
checked on loopback sockets with SRTP keys we hold (so the test can play browser and trunk itself), and
with an aiortc browser for what only a real peer does (ICE consent, DTLS close).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aioice.ice
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from media import fastpath
from media.opus import OpusEncoder
from media.relay import CallRelay
from media.rewriter import StreamRewriter
from media.rtcp import ReceptionStats
from media.rtp import build_rtp, parse_rtp
from media.transcoder import new_transcoder
from media.trunk import PortRange, TrunkLeg
from media.webrtc import WebRtcLeg
from sdp import MediaParameters, NegotiatedCodec
from tests.media.peers import tone
from tests.media.test_passthrough import connect_outbound

native = pytest.importorskip("media._fastpath", reason="the C extension is not built")
#: The relay's own use of the pump, which TELEBRIDGE_MEDIA_FASTPATH=0 turns off (the Python-only run).
uses_pump = pytest.mark.skipif(not fastpath.available(), reason="TELEBRIDGE_MEDIA_FASTPATH=0")

# --- the state types against their Python twins --------------------------------------------------
packets = st.lists(
    st.tuples(
        st.sampled_from([0, 8, 101, 126, 13]),  # mapped, mapped, mapped, unmapped, mapped
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([0x1111, 0x2222, 0xFFFFFFFF]),
        st.booleans(),
        st.floats(0, 4),  # seconds since the previous packet
        st.sampled_from(["rewrite", "rewrite", "rewrite", "next", "restart"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    packets,
    st.sampled_from([(8000, 8000), (48000, 8000), (8000, 48000), (16000, 8000)]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_c_rewriter_matches_python(
    sequence: list[Any], rates: tuple[int, int], first_seq: int, first_ts: int
) -> None:
    kwargs: dict[str, Any] = {
        "ssrc": 0xABCDEF01,
        "in_rate": rates[0],
        "out_rate": rates[1],
        "initial_sequence": first_seq,
        "initial_timestamp": first_ts,
    }
    mapping = {0: 0, 8: 8, 101: 96, 13: 13}
    ours, theirs = native.Rewriter(dict(mapping), **kwargs), StreamRewriter(dict(mapping), **kwargs)
    now = 1000.0
    for pt, seq, ts, ssrc, marker, gap, op in sequence:
        now += gap
        if op == "next":
            assert ours.next_timestamp(now) == theirs.next_timestamp(now)
        elif op == "restart":
            ours.restart()
            theirs.restart()
        else:
            a = build_rtp(pt, seq, ts, ssrc, b"\x01" * 20, marker)
            b = bytearray(a)
            assert ours.rewrite(a, now) == theirs.rewrite(b, now)
            assert a == b
        assert (ours.last_sequence, ours.last_timestamp) == (theirs.last_sequence, theirs.last_timestamp)
    assert (ours.rewritten, ours.dropped_payload_type, ours.source_changes) == (
        theirs.rewritten,
        theirs.dropped_payload_type,
        theirs.source_changes,
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([7, 8]),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.floats(0, 0.1),
        ),
        max_size=80,
    ),
    st.sampled_from([8000, 48000]),
)
def test_c_reception_matches_python(received: list[Any], rate: int) -> None:
    ours, theirs = native.Reception(rate), ReceptionStats(rate)
    now = 50.0
    for ssrc, seq, ts, gap in received:
        now += gap
        ours.on_rtp_received(ssrc, seq, ts, now)
        theirs.on_rtp_received(ssrc, seq, ts, now)
    for name in ("remote_ssrc", "base_seq", "max_seq", "cycles", "received", "packets_received"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.jitter == pytest.approx(theirs.jitter, rel=1e-12, abs=1e-9)


def test_bad_arguments_are_errors_not_crashes() -> None:
    rewriter = native.Rewriter({0: 0})
    with pytest.raises(ValueError):
        rewriter.rewrite(bytearray(11), 1.0)
    with pytest.raises(BufferError):
        rewriter.rewrite(b"\x80" * 12, 1.0)  # read-only: rewritten in place
    with pytest.raises(ValueError):
        native.Rewriter({0: 200})
    with pytest.raises(ValueError):
        native.Rewriter({0: 0}, in_rate=0)
    with pytest.raises(ValueError):
        native.Reception(0)
    pump = native.Pump()
    try:
        with pytest.raises(ValueError):
            pump.add_webrtc(
                fd=0, rx_context=0, tx_context=0, unprotect=0, protect=0, on_slow=print,
                on_rtcp=print, on_clear=print, rate=10.0, burst=5.0,
            )  # fmt: skip
        with pytest.raises(OSError):
            pump.add_trunk(fd=999_999, on_slow=print, rate=10.0, burst=5.0)
    finally:
        pump.close()


# --- the pump on loopback sockets ---------------------------------------------------------------
def _srtp(key: bytes, inbound: bool) -> Session:
    return Session(
        Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND)
    )


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@dataclass
class Wire:
    """One passthrough call through the pump, with the test playing the browser and the trunk."""

    relay: CallRelay
    web: WebRtcLeg
    trunk: TrunkLeg
    browser: socket.socket
    phone: socket.socket
    to_browser: Session  # what the browser would use to unprotect what we send it
    from_browser: Session  # what the browser protects with
    digits: list[tuple[str, str]]
    _web_port: int = 0

    def browser_sends(
        self, seq: int, pt: int = 0, payload: bytes = b"\xff" * 160, ssrc: int = 0x5555
    ) -> None:
        packet = build_rtp(pt, seq, seq * 160, ssrc, payload)
        self.browser.sendto(self.from_browser.protect(bytes(packet)), ("127.0.0.1", self._web_port))

    def phone_sends(
        self, seq: int, pt: int = 0, payload: bytes = b"\x7f" * 160, sock: socket.socket | None = None
    ) -> None:
        packet = build_rtp(pt, seq, seq * 160, 0x7777, payload)
        (sock or self.phone).sendto(bytes(packet), ("127.0.0.1", self.trunk.local_port))

    async def received(self, sock: socket.socket, count: int, limit: float = 5.0) -> list[bytes]:
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while len(got) < count and loop.time() < deadline:
            try:
                got.append(sock.recv(2048))
            except BlockingIOError:
                await asyncio.sleep(0.005)
        return got


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    async with _open_wire(transcoded=False) as w:
        yield w


@pytest.fixture(params=[False, True], ids=["passthrough", "transcoding"])
async def any_wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    """The same call, and again with the browser side on Opus: the C transcoder in the pump."""
    async with _open_wire(transcoded=request.param) as w:
        yield w


@contextlib.asynccontextmanager
async def _open_wire(transcoded: bool) -> AsyncIterator[Wire]:
    assert fastpath.available()
    digits: list[tuple[str, str]] = []
    leg = WebRtcLeg(lambda *a: None, bind_addresses=("127.0.0.1",))
    await leg.gather()
    browser, phone = _udp(), _udp()
    to_web_key, from_web_key = os.urandom(30), os.urandom(30)
    protocol = leg._ice._connection._protocols[0]
    leg.attach_srtp(protocol, browser.getsockname(), _srtp(from_web_key, True), _srtp(to_web_key, False))
    web_port = protocol.transport.get_extra_info("sockname")[1]
    trunk = await TrunkLeg.open(PortRange("127.0.0.1"), lambda *a: None, relatch_after=0.5)
    trunk.set_remote(*phone.getsockname())
    te = NegotiatedCodec("telephone-event", 8000, 101, 101)
    params = MediaParameters(codec=NegotiatedCodec("PCMU", 8000, 0, 0), telephone_events=[te])
    web_params, transcoders = params, (None, None)
    if transcoded:
        opus_te = NegotiatedCodec("telephone-event", 48000, 110, 110)
        web_params = MediaParameters(
            codec=NegotiatedCodec("opus", 48000, 111, 111, 2), telephone_events=[opus_te]
        )
        transcoders = (new_transcoder("opus", "pcmu"), new_transcoder("pcmu", "opus"))
    relay = CallRelay(
        web_params, params, leg.send_rtp, trunk.send_rtp, lambda leg, d: digits.append((leg, d)), transcoders
    )
    leg.on_rtp, trunk.on_rtp = relay.to_trunk.forward, relay.to_web.forward
    leg.on_rtcp, trunk.on_rtcp = relay.rtcp_from_web, relay.rtcp_from_trunk
    pump = fastpath.pump()
    relay.route_in_c(leg.offload(pump), trunk.offload(pump))
    w = Wire(relay, leg, trunk, browser, phone, _srtp(to_web_key, True), _srtp(from_web_key, False), digits)
    w._web_port = web_port
    try:
        yield w
    finally:
        trunk.close()
        await leg.close()
        browser.close()
        phone.close()


@uses_pump
async def test_passthrough_packets_are_relayed_in_c_both_ways(wire: Wire) -> None:
    # The phone speaks first, so the trunk leg latches to it (RFC 4961) and the C path takes over.
    for seq in range(1, 21):
        wire.phone_sends(seq)
        wire.browser_sends(seq)
        await asyncio.sleep(0.002)
    to_phone = await wire.received(wire.phone, 20)
    to_browser = [wire.to_browser.unprotect(p) for p in await wire.received(wire.browser, 20)]
    assert len(to_phone) == len(to_browser) == 20
    for packets, ssrc in ((to_phone, wire.relay.trunk_rtcp.ssrc), (to_browser, wire.relay.web_rtcp.ssrc)):
        headers = [parse_rtp(p) for p in packets]
        assert {h.ssrc for h in headers} == {ssrc}  # type: ignore[union-attr]
        seqs = [h.sequence_number for h in headers]  # type: ignore[union-attr]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert to_phone[0][12:] == b"\xff" * 160 and to_browser[0][12:] == b"\x7f" * 160
    web, trunk = wire.web.counter_totals(), wire.trunk.counter_totals()
    assert web["rtp_received"] == 20 and trunk["rtp_received"] == 20
    assert web["sent"] == 20 and trunk["sent"] == 20
    # Most went through C: Python saw at most the trunk's first packet (the latch).
    assert wire.web.counters.rtp_received == 0 and wire.trunk.counters.rtp_received <= 1
    # RTCP sees them all (the stats objects are shared).
    stats = wire.relay.stats()
    assert stats["webrtc"].packets_received == 20 and stats["trunk"].packets_sent == 20
    report, _ = wire.relay.rtcp_reports(asyncio.get_running_loop().time())
    assert report[1] == 200  # an SR: we sent


@uses_pump
async def test_events_and_hold_go_through_python_in_one_stream(wire: Wire) -> None:
    wire.phone_sends(1)
    await wire.received(wire.browser, 1)
    # An RFC 4733 digit '5' from the browser: detected in Python, relayed with its payload type.
    for i, end in enumerate([False, False, True, True, True]):
        flags = 0x80 if end else 0
        wire.browser_sends(
            10 + i, pt=101, payload=bytes([5, flags | 10]) + (160 * (i + 1)).to_bytes(2, "big")
        )
    events = await wire.received(wire.phone, 5)
    assert [parse_rtp(p).payload_type for p in events] == [101] * 5  # type: ignore[union-attr]
    assert ("webrtc", "5") in wire.digits
    # Hold: the direction to the phone is muted; nothing reaches it, in C or in Python.
    wire.relay.to_trunk.muted = True
    for seq in range(20, 25):
        wire.browser_sends(seq)
    await asyncio.sleep(0.2)
    assert await wire.received(wire.phone, 1, limit=0.2) == []
    assert wire.relay.to_trunk.suppressed == 5
    # Unmuted: C relays again, in the same outgoing stream (same SSRC, the source's gap kept honest).
    wire.relay.to_trunk.muted = False
    wire.browser_sends(30)
    (resumed,) = await wire.received(wire.phone, 1)
    last_event, after = parse_rtp(events[-1]), parse_rtp(resumed)
    assert after.ssrc == last_event.ssrc  # type: ignore[union-attr]
    assert (after.sequence_number - last_event.sequence_number) & 0xFFFF == 30 - 14  # type: ignore[union-attr]
    assert wire.web._fast.fast


@uses_pump
async def test_bad_and_foreign_packets_are_dropped_and_counted(wire: Wire) -> None:
    wire.phone_sends(1)
    await wire.received(wire.browser, 1)
    # Forged SRTP (no valid auth tag), and a STUN request whose PRIORITY attribute is 2 bytes long (aioice's
    # parser raises struct.error on it) on the WebRTC socket.
    wire.browser.sendto(bytes(build_rtp(0, 2, 320, 0x5555, b"\x00" * 170)), ("127.0.0.1", wire._web_port))
    bad_stun = struct.pack(
        "!HHI12sHH4s", 0x0001, 8, 0x2112A442, os.urandom(12), 0x0024, 2, b"\x00\x01\x00\x00"
    )
    wire.browser.sendto(bad_stun, ("127.0.0.1", wire._web_port))
    # On the trunk: a packet too short to be RTP from the latched source, and media from a stranger.
    wire.phone.sendto(b"\x80\x00\x01", ("127.0.0.1", wire.trunk.local_port))
    stranger = _udp()
    try:
        wire.phone_sends(2, sock=stranger)
        await asyncio.sleep(0.2)
        web, trunk = wire.web.counter_totals(), wire.trunk.counter_totals()
        assert web["unauthenticated"] == 1
        assert web["malformed"] == 1
        assert trunk["malformed"] == 1
        assert trunk["foreign_source"] == 1
        assert await wire.received(wire.browser, 1, limit=0.2) == []
        # The real source goes quiet past relatch_after: the stranger's media now latches (NAT rebinding).
        await asyncio.sleep(0.6)
        wire.phone_sends(3, sock=stranger)
        assert len(await wire.received(wire.browser, 1)) == 1
        assert wire.trunk.remote == stranger.getsockname()
        # ... and from then on the old source is the stranger.
        wire.phone_sends(4)
        await asyncio.sleep(0.1)
        assert wire.trunk.counter_totals()["foreign_source"] == 2
    finally:
        stranger.close()


@uses_pump
async def test_a_flood_is_cut_to_the_configured_rate(wire: Wire) -> None:
    for seq in range(1, 400):
        wire.browser_sends(seq)
    await asyncio.sleep(0.3)
    web = wire.web.counter_totals()
    assert web["flood_dropped"] > 0
    assert web["rtp_received"] + web["flood_dropped"] == 399


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_failing_callback_does_not_stop_the_pump() -> None:
    pump = native.Pump()
    calls: list[bytes] = []

    def on_slow(data: bytes, addr: Any, now: float) -> None:
        calls.append(data)
        raise RuntimeError("bug in a handler")

    receiver, sender = _udp(), _udp()
    leg = pump.add_trunk(fd=os.dup(receiver.fileno()), on_slow=on_slow, rate=1000.0, burst=100.0)
    try:
        for i in range(3):
            sender.sendto(b"x%d" % i, receiver.getsockname())
        await asyncio.sleep(0.05)
        pump.run()
        assert calls == [b"x0", b"x1", b"x2"]
        assert len(pump) == 1
        leg.close()
        assert len(pump) == 0 and leg.closed
        sender.sendto(b"after", receiver.getsockname())
        pump.run()  # a closed leg is out of the epoll set
        assert len(calls) == 3
    finally:
        pump.close()
        receiver.close()
        sender.close()


# --- with a real WebRTC peer --------------------------------------------------------------------
@uses_pump
async def test_offloaded_call_keeps_ice_consent_and_ends_when_the_browser_leaves(
    browser: RTCPeerConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aioice's consent checks (RFC 7675) go out through the pump's socket and their answers come back to
    aioice; the browser's DTLS close_notify still reaches aiortc and ends the call."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    call, peer = await connect_outbound(browser, tone(440, 4.0))
    events: list[str] = []
    call.on_event = lambda kind, data: events.append(kind)
    try:
        await peer.wait_for(20)
        assert call.web._fast is not None and call.trunk is not None and call.trunk._fast is not None
        before = call.web._fast.counters()["rtp_received"]
        await asyncio.sleep(2.0)  # ten consent intervals: a lost answer would have failed the leg
        assert call.web.state.value == "connected" and not call.closed
        assert call.web._fast.counters()["rtp_received"] > before
        await browser.close()
        for _ in range(100):
            if "closed" in events:
                break
            await asyncio.sleep(0.05)
        assert call.closed and "closed" in events
    finally:
        await call.close()
        peer.close()


@uses_pump
async def test_transcoded_call_is_relayed_by_the_pump_both_ways(browser: RTCPeerConnection) -> None:
    """Opus in the browser, PCMU on the trunk: the C transcoder and the pump carry both directions; the
    trunk hears the browser's tone, and the browser is sent what the trunk sends."""
    from media import g711
    from media.call import MediaConfig
    from tests.media.peers import dominant_frequency

    opus_only = MediaConfig(webrtc_codecs=("opus",))
    call, peer = await connect_outbound(browser, tone(440, 3.0, rate=48000), opus_only)
    try:
        await peer.wait_for(60)
        assert call.relay is not None and not call.relay.passthrough and call.relay.in_c
        assert call.stats()["relay"] == "c"
        web, trunk = call.web._fast, call.trunk._fast if call.trunk is not None else None
        assert web is not None and web.fast and trunk is not None and trunk.fast
        assert web.counters()["rtp_received"] >= 60  # counted by the pump, so transcoded in C
        headers = [h for h, _, _ in peer.received]
        assert {h.payload_type for h in headers} == {0}
        audio = g711.ulaw_decode(b"".join(data[12:] for _, data, _ in peer.received[20:]))
        assert abs(dominant_frequency(audio, 8000) - 440) < 10

        # The phone talks: after latching (Python), its packets are transcoded to Opus in C.
        source = peer.received[0][2]
        frame = g711.ulaw_encode(tone(1000, 0.02, rate=8000))
        for i in range(30):
            peer.send_to(build_rtp(0, 7 + i, 160 * i, 0x99, frame), source)
            await asyncio.sleep(0.005)
        for _ in range(100):
            if trunk.counters()["rtp_received"] >= 25:
                break
            await asyncio.sleep(0.02)
        assert trunk.counters()["rtp_received"] >= 25
        assert call.relay.to_web.transcoder.codec_errors == 0  # type: ignore[union-attr]
        assert call.relay.to_web.rewriter.rewritten >= 26
    finally:
        await call.close()
        peer.close()


@uses_pump
async def test_random_datagrams_into_the_pump_never_break_it(any_wire: Wire) -> None:
    """Garbage, truncated headers, odd CSRC/extension/padding fields, authentic SRTP with odd contents
    (for the transcoder: garbage Opus and G.711 of any length): all dropped, counted or relayed;
    afterwards a plain packet still goes through."""
    wire = any_wire
    rng = random.Random(4733)
    wire.phone_sends(1)
    await wire.received(wire.browser, 1)
    for i in range(600):
        kind = rng.randrange(4)
        body = rng.randbytes(rng.randrange(0, 200))
        if kind == 0:
            data = body
        elif kind == 1:  # an RTP-looking header with random flags (CSRC count, extension, padding)
            data = bytes([0x80 | rng.randrange(0x40), rng.randrange(256)]) + rng.randbytes(10) + body
        elif kind == 2:  # authentic SRTP carrying whatever
            header = bytes([0x80 | rng.randrange(0x40), rng.choice([0, 8, 13, 101, 96, 110, 111])])
            clear = header + (100 + i).to_bytes(2, "big") + rng.randbytes(8) + body
            try:
                data = wire.from_browser.protect(clear)
            except pylibsrtp.Error:  # libsrtp refuses to protect some headers (CSRCs past the end)
                data = clear
        else:
            data = bytes([rng.randrange(256)]) + body
        if rng.random() < 0.5:
            wire.browser.sendto(data, ("127.0.0.1", wire._web_port))
        else:
            wire.phone.sendto(data, ("127.0.0.1", wire.trunk.local_port))
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    while await wire.received(wire.phone, 1, limit=0.05) or await wire.received(wire.browser, 1, limit=0.05):
        pass
    if wire.relay.passthrough:
        wire.browser_sends(5000)
        assert len(await wire.received(wire.phone, 1)) == 1
        return
    # Transcoding: real Opus from the browser still becomes PCMU for the phone, and the other way.
    encoder = OpusEncoder(24000, 1, 48000)
    for seq in range(5000, 5003):
        wire.browser_sends(seq, pt=111, payload=encoder.encode(tone(440, 0.02, rate=48000))[0])
    got = await wire.received(wire.phone, 3)
    assert len(got) == 3 and all(p[1] & 0x7F == 0 and len(p) == 12 + 160 for p in got)
    # The fuzz left the phone→browser transcoder at an unknown sequence number; of two packets half the
    # number space apart, at least one is ahead of it, not late.
    wire.phone_sends(6000)
    wire.phone_sends(6000 + 0x8000)
    assert len(await wire.received(wire.browser, 1)) == 1
    assert wire.trunk._fast is not None and wire.trunk._fast.fast
