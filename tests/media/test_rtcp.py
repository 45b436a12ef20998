"""RTCP per leg: reception stats, SR/RR, reading the peer's reports (RFC 3550 §6, §A.3, §A.8)."""

from hypothesis import given
from hypothesis import strategies as st

from media.rtcp import RR, SDES, SR, RtcpSession, parse_compound


def test_receiver_report_counts_loss() -> None:
    rx = RtcpSession(ssrc=1, clock_rate=8000)
    for seq in range(100, 200):
        if seq % 10 != 0:
            rx.on_rtp_received(0x55, seq, seq * 160, seq * 0.02)
    report = rx.build_report(4.0, wall=1_700_000_000.0)
    parts = parse_compound(report)
    assert parts is not None
    assert [p[0] for p in parts] == [RR, SDES]
    assert rx.stats.received_lost == 9  # 110, 120, … 190 (100 was before the first packet)
    assert rx.stats.received_jitter_ms < 0.01  # perfectly paced stream


def test_peer_report_about_our_stream_gives_loss_jitter_and_rtt() -> None:
    ours = RtcpSession(ssrc=0xAAAA, clock_rate=8000)
    peer = RtcpSession(ssrc=0xBBBB, clock_rate=8000)
    for seq in range(50):
        ours.on_rtp_sent(seq * 160, 160, seq * 0.02)
        if seq != 7:
            peer.on_rtp_received(0xAAAA, seq, seq * 160, seq * 0.02 + (0.005 if seq % 2 else 0))
    sr = ours.build_report(1.0, wall=1000.0)
    assert parse_compound(sr)[0][0] == SR  # type: ignore[index]
    assert peer.on_rtcp_received(sr, now=1.01, wall=1000.01)
    rr = peer.build_report(1.05, wall=1000.05)
    assert ours.on_rtcp_received(rr, now=1.06, wall=1000.06)
    stats = ours.stats
    assert stats.reports_received == 1
    assert stats.remote_cumulative_lost == 1
    assert stats.remote_fraction_lost > 0
    assert stats.remote_jitter_ms > 1
    assert stats.rtt_ms is not None and abs(stats.rtt_ms - 20) < 1


@given(st.binary(max_size=300))
def test_malformed_rtcp_is_a_false_value(data: bytes) -> None:
    session = RtcpSession(ssrc=1, clock_rate=8000)
    assert session.on_rtcp_received(data, 0.0) in (True, False)
