"""DTMF (RFC 4733) across the relay: translation between clock rates and payload types, digits observed,
digits injected into the stream."""

from __future__ import annotations

import asyncio
import itertools

from aiortc import RTCPeerConnection

from media.dtmf import DtmfDetector, DtmfGenerator, EventPayload, parse_event
from media.relay import CallRelay
from media.rtp import RtpHeader, build_rtp, parse_rtp
from sdp import MediaParameters, NegotiatedCodec
from tests.media.peers import tone
from tests.media.test_passthrough import connect_outbound


def params(codec: str, rate: int, pt: int, te_pt: int) -> MediaParameters:
    return MediaParameters(
        codec=NegotiatedCodec(codec, rate, pt, pt),
        telephone_events=[NegotiatedCodec("telephone-event", rate, te_pt, te_pt)],
    )


class Capture:
    def __init__(self) -> None:
        self.packets: list[tuple[RtpHeader, bytes]] = []

    def __call__(self, packet: bytes | bytearray) -> None:
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        self.packets.append((header, bytes(packet)))


def feed(relay_input, pt: int, packets: list[tuple[float, bool, bytes]], start_seq: int, ts: int) -> None:  # type: ignore[no-untyped-def]
    for i, (offset, marker, payload) in enumerate(packets):
        packet = build_rtp(pt, start_seq + i, ts, 0x5555, payload, marker)
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        relay_input(packet, header, 10.0 + offset)


def test_webrtc_event_at_48000_reaches_trunk_at_8000_with_scaled_duration_and_all_retransmissions() -> None:
    to_trunk, to_web = Capture(), Capture()
    digits: list[tuple[str, str]] = []
    relay = CallRelay(
        params("opus", 48000, 111, 110),
        params("PCMU", 8000, 0, 101),
        to_web,
        to_trunk,
        lambda leg, d: digits.append((leg, d)),
    )
    # Audio first so the stream's mapping starts (its payload is irrelevant here: no transcoder attached).
    relay.to_trunk.transcoder = None
    audio = build_rtp(111, 99, 96000 - 960, 0x5555, b"\x00" * 20)
    relay.from_web(audio, parse_rtp(audio), 9.98)  # type: ignore[arg-type]
    feed(relay.from_web, 110, DtmfGenerator(48000).packets("7", duration_ms=100), 100, 96000)
    events = [(h, parse_event(p[12:])) for h, p in to_trunk.packets if h.payload_type == 101]
    assert digits == [("webrtc", "7")]
    assert len(events) == 7  # 4 updates and all 3 end retransmissions
    first_ts = to_trunk.packets[0][0].timestamp
    assert {h.timestamp for h, _ in events} == {first_ts + 160}  # 960 at 48 kHz = 160 at 8 kHz
    assert [e.duration for _, e in events if e] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for _, e in events if e] == [False] * 4 + [True] * 3
    assert events[0][0].marker and not any(h.marker for h, _ in events[1:])


def test_trunk_event_at_8000_reaches_webrtc_at_48000() -> None:
    to_trunk, to_web = Capture(), Capture()
    relay = CallRelay(params("opus", 48000, 111, 110), params("PCMU", 8000, 0, 101), to_web, to_trunk)
    feed(relay.from_trunk, 101, DtmfGenerator(8000).packets("#", duration_ms=60), 1, 8000)
    events = [parse_event(p[12:]) for h, p in to_web.packets if h.payload_type == 110]
    assert [e.duration for e in events if e] == [960, 1920, 2880, 2880, 2880]
    assert all(e is not None and e.event == 11 for e in events)


def test_same_rate_events_keep_duration_and_change_payload_type() -> None:
    to_trunk, to_web = Capture(), Capture()
    relay = CallRelay(params("PCMU", 8000, 0, 126), params("PCMU", 8000, 0, 101), to_web, to_trunk)
    feed(relay.from_web, 126, DtmfGenerator(8000).packets("1", duration_ms=40), 1, 1000)
    assert {h.payload_type for h, _ in to_trunk.packets} == {101}
    assert parse_event(to_trunk.packets[-1][1][12:]) == EventPayload(1, True, 10, 320)


async def test_digits_from_trunk_are_reported_and_injected_digits_reach_trunk_in_stream(
    browser: RTCPeerConnection,
) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 4.0))
    events: list[tuple[str, dict[str, object]]] = []
    call.on_event = lambda kind, data: events.append((kind, data))
    try:
        assert call.trunk is not None
        await peer.wait_for(20)
        # Trunk → relay: "5" then "#" as a trunk sends them (PT 101, three end packets each).
        for i, digit in enumerate("5#"):
            packets = DtmfGenerator(8000).packets(digit, duration_ms=60)
            for j, (_, marker, payload) in enumerate(packets):
                peer.send_to(
                    build_rtp(101, 5000 + 10 * i + j, 80000 + 8000 * i, 0x77, payload, marker),
                    ("127.0.0.1", call.trunk.local_port),
                )
        # Relay → trunk: inject "12" (replaces audio while each event lasts).
        already = len(peer.received)
        await call.send_dtmf("12", leg="trunk", duration_ms=60)
        await asyncio.sleep(0.1)
        for _ in range(20):
            if len([e for e in events if e[0] == "digit"]) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await call.close()
        peer.close()
    # aiortc offers no telephone-event, so the digits could not go on to the browser in RTP.
    assert [d for k, d in events if k == "digit"] == [
        {"leg": "trunk", "digit": "5", "relayed": False},
        {"leg": "trunk", "digit": "#", "relayed": False},
    ]
    later = peer.received[already:]
    heard: list[str] = []
    detector = DtmfDetector(lambda digit, ts: heard.append(digit))
    for header, data, _ in later:
        if header.payload_type == 101:
            detector.feed(header.timestamp, data[12:])
    assert heard == ["1", "2"]
    # One stream: same SSRC for audio and events, sequence numbers strictly consecutive.
    assert {h.ssrc for h, _, _ in later} == {call.trunk_ssrc}
    seqs = [h.sequence_number for h, _, _ in later]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    ends = [parse_event(d[12:]) for h, d, _ in later if h.payload_type == 101]
    assert sum(1 for e in ends if e and e.end) == 6
