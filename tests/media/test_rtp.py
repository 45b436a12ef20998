"""RTP header validation and reading (RFC 3550 §5.1, §A.1)."""

import struct

from hypothesis import given
from hypothesis import strategies as st

from media.rtp import Malformed, RtpHeader, build_rtp, is_rtcp, parse_rtp


def test_minimal_packet_is_read() -> None:
    packet = build_rtp(0, 1234, 160000, 0xDEADBEEF, b"\xff" * 160, marker=True)
    assert parse_rtp(packet) == RtpHeader(True, 0, 1234, 160000, 0xDEADBEEF, 12, 172)


def test_csrcs_extension_and_padding_are_skipped() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 8, 1, 2, 3)
    csrcs = struct.pack("!II", 10, 11)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    payload = b"abcd"
    padding = b"\x00\x00\x03"
    result = parse_rtp(header + csrcs + extension + payload + padding)
    assert isinstance(result, RtpHeader)
    assert (result.payload_start, result.payload_end) == (12 + 8 + 8, 12 + 8 + 8 + 4)


def test_invalid_packets_are_values_not_exceptions() -> None:
    good = build_rtp(0, 1, 1, 1, b"x")
    assert parse_rtp(b"") is Malformed.TOO_SHORT
    assert parse_rtp(good[:11]) is Malformed.TOO_SHORT
    assert parse_rtp(b"\x40" + good[1:]) is Malformed.BAD_VERSION
    assert parse_rtp(b"\x8f" + good[1:]) is Malformed.BAD_CSRC
    assert parse_rtp(b"\x90" + good[1:]) is Malformed.BAD_EXTENSION
    assert parse_rtp(b"\xa0" + good[1:-1] + b"\x00") is Malformed.BAD_PADDING
    assert parse_rtp(b"\xa0" + good[1:-1] + b"\x09") is Malformed.BAD_PADDING
    assert parse_rtp(bytes(good) + b"\x00" * 1500) is Malformed.TOO_LONG
    assert parse_rtp(b"\x80\xc8" + bytes(good[2:])) is Malformed.RTCP


def test_rtcp_is_told_from_rtp_by_packet_type() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")
    assert is_rtcp(b"\x81\xc9\x00\x07")
    assert not is_rtcp(build_rtp(0, 1, 1, 1, b""))
    assert not is_rtcp(build_rtp(111, 1, 1, 1, b"", marker=True))
    assert not is_rtcp(b"\x80")


@given(st.binary(max_size=1600))
def test_any_datagram_gives_a_header_or_a_reason(data: bytes) -> None:
    result = parse_rtp(data)
    assert isinstance(result, RtpHeader | Malformed)
    if isinstance(result, RtpHeader):
        assert 12 <= result.payload_start <= result.payload_end <= len(data)


@given(
    st.integers(0, 127).filter(lambda pt: not 64 <= pt <= 95),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
)
def test_built_packets_parse_back(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool
) -> None:
    result = parse_rtp(build_rtp(pt, seq, ts, ssrc, payload, marker))
    assert result == RtpHeader(marker, pt, seq, ts, ssrc, 12, 12 + len(payload))
