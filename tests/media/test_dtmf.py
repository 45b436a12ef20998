"""RFC 4733 telephone-events."""

from media.dtmf import DtmfDetector, DtmfGenerator, EventPayload, parse_event, scale_event_duration
from media.rtp import build_rtp


def test_generated_digit_has_marker_first_and_three_end_packets() -> None:
    packets = DtmfGenerator(8000).packets("5", duration_ms=100)
    events = [parse_event(p) for _, _, p in packets]
    assert [m for _, m, _ in packets] == [True] + [False] * (len(packets) - 1)
    assert all(e is not None and e.event == 5 for e in events)
    assert [e.end for e in events if e] == [False] * 4 + [True] * 3
    assert [e.duration for e in events if e] == [160, 320, 480, 640, 800, 800, 800]
    assert [t for t, _, _ in packets] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12]


def test_detector_reports_each_digit_once_despite_retransmitted_ends() -> None:
    seen: list[str] = []
    detector = DtmfDetector(lambda digit, ts: seen.append(digit))
    for ts, digit in ((1000, "1"), (3000, "#"), (5000, "1")):
        for _, _, payload in DtmfGenerator(8000).packets(digit):
            detector.feed(ts, payload)
    assert seen == ["1", "#", "1"]


def test_short_event_payload_is_ignored() -> None:
    seen: list[str] = []
    assert DtmfDetector(lambda d, ts: seen.append(d)).feed(0, b"\x01") is None
    assert seen == []


def test_duration_is_scaled_in_place_48000_to_8000() -> None:
    packet = build_rtp(110, 1, 0, 1, EventPayload(11, True, 10, 4800).to_bytes())
    scale_event_duration(packet, 12, 8000, 48000)
    assert parse_event(packet[12:]) == EventPayload(11, True, 10, 800)
    scale_event_duration(packet, 12, 48000, 8000)
    assert parse_event(packet[12:]) == EventPayload(11, True, 10, 4800)


def test_scaled_duration_saturates() -> None:
    packet = bytearray(EventPayload(1, False, 0, 60000).to_bytes())
    scale_event_duration(packet, 0, 6, 1)
    assert parse_event(packet) == EventPayload(1, False, 0, 0xFFFF)
