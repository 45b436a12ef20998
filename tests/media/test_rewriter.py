"""Per-direction SSRC/sequence/timestamp/payload-type rewriting (RFC 3550 §7 translator)."""

from hypothesis import given
from hypothesis import strategies as st

from media.rewriter import StreamRewriter
from media.rtp import RtpHeader, build_rtp, parse_rtp


def relay(
    rw: StreamRewriter, pt: int, seq: int, ts: int, ssrc: int, now: float, marker: bool = False
) -> RtpHeader:
    packet = build_rtp(pt, seq, ts, ssrc, b"\x01\x02", marker)
    assert rw.rewrite(packet, now)
    header = parse_rtp(packet)
    assert isinstance(header, RtpHeader)
    assert packet[12:] == b"\x01\x02"
    return header


def make() -> StreamRewriter:
    return StreamRewriter({0: 0, 126: 101}, ssrc=0xABCDEF01, initial_sequence=1000, initial_timestamp=50000)


def test_first_packet_takes_our_ssrc_sequence_and_timestamp() -> None:
    h = relay(make(), 0, 7, 123456, 0x11111111, 0.0)
    assert (h.ssrc, h.sequence_number, h.timestamp, h.marker) == (0xABCDEF01, 1000, 50000, True)


def test_sequence_gaps_and_reordering_stay_visible() -> None:
    rw = make()
    seqs = [relay(rw, 0, s, s * 160, 5, s * 0.02).sequence_number for s in (10, 11, 13, 12, 14)]
    assert seqs == [1000, 1001, 1003, 1002, 1004]


def test_payload_type_is_mapped_and_unknown_types_are_dropped() -> None:
    rw = make()
    assert relay(rw, 126, 1, 0, 5, 0.0).payload_type == 101
    packet = build_rtp(96, 2, 160, 5, b"")
    assert not rw.rewrite(packet, 0.02)
    assert rw.dropped_payload_type == 1


def test_marker_bit_is_kept_within_a_source() -> None:
    rw = make()
    relay(rw, 0, 1, 0, 5, 0.0)
    assert not relay(rw, 0, 2, 160, 5, 0.02).marker
    assert relay(rw, 0, 3, 320, 5, 0.04, marker=True).marker


def test_source_change_continues_sequence_and_advances_timestamp_by_wall_time() -> None:
    rw = make()
    for i in range(5):
        last = relay(rw, 0, 100 + i, 8000 + 160 * i, 0xAAAA, i * 0.02)
    # New source 100 ms after the last packet, with unrelated numbering.
    h = relay(rw, 0, 40000, 999999, 0xBBBB, 0.08 + 0.1)
    assert h.sequence_number == last.sequence_number + 1
    assert h.timestamp == last.timestamp + 800
    assert h.marker
    assert rw.source_changes == 1
    nxt = relay(rw, 0, 40001, 999999 + 160, 0xBBBB, 0.2)
    assert (nxt.sequence_number, nxt.timestamp, nxt.marker) == (
        h.sequence_number + 1,
        h.timestamp + 160,
        False,
    )


def test_immediate_source_change_still_advances_one_frame() -> None:
    rw = make()
    a = relay(rw, 0, 1, 0, 1, 0.0)
    b = relay(rw, 0, 9, 0, 2, 0.0)
    assert b.timestamp - a.timestamp == 160


def test_big_sequence_jump_is_handled_as_a_new_source() -> None:
    rw = make()
    a = relay(rw, 0, 1, 0, 1, 0.0)
    b = relay(rw, 0, 20000, 0, 1, 0.02)
    assert b.sequence_number == a.sequence_number + 1
    assert b.marker


def test_clock_rate_is_scaled_48000_to_8000() -> None:
    rw = StreamRewriter({110: 101}, in_rate=48000, out_rate=8000, initial_sequence=0, initial_timestamp=0)
    stamps = [relay(rw, 110, i, 960 * i + 5, 7, i * 0.02).timestamp for i in range(4)]
    assert stamps == [0, 160, 320, 480]


def test_wraparound_of_sequence_and_timestamp() -> None:
    rw = StreamRewriter({0: 0}, initial_sequence=0xFFFE, initial_timestamp=0xFFFFFF00)
    hs = [relay(rw, 0, 65534 + i, (0xFFFFFFF0 + 160 * i) & 0xFFFFFFFF, 3, i * 0.02) for i in range(4)]
    assert [h.sequence_number for h in hs] == [0xFFFE, 0xFFFF, 0, 1]
    assert [h.timestamp for h in hs] == [0xFFFFFF00, 0xFFFFFFA0, 0x40, 0xE0]


def test_injected_packets_fit_between_relayed_ones() -> None:
    rw = make()
    a = relay(rw, 0, 1, 0, 9, 0.0)
    seq, ts = rw.next_timestamp(0.02)
    assert (seq, ts) == (a.sequence_number + 1, a.timestamp + 160)
    rw.restart()
    b = relay(rw, 0, 2, 160, 9, 0.04)
    assert b.sequence_number == seq + 1
    assert b.timestamp >= ts + 160


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 40), st.integers(0, 2)), min_size=1, max_size=60)
)
def test_output_stays_one_stream_whatever_the_input(steps: list[tuple[int, int, int]]) -> None:
    """Whatever sources and jumps arrive, output SSRC is constant and new packets never reuse a sequence
    number that was already sent for a different input packet of the same source."""
    rw = make()
    seq = {s: 1000 * s for s in range(4)}
    now = 0.0
    out_ssrcs = set()
    for source, step, _ in steps:
        seq[source] = (seq[source] + step) & 0xFFFF
        now += 0.02
        h = relay(rw, 0, seq[source], seq[source] * 160, source, now)
        out_ssrcs.add(h.ssrc)
    assert out_ssrcs == {0xABCDEF01}
