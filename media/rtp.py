"""RTP and RTCP packets (RFC 3550), read and rewritten in place.

The relay handles every packet of every call, so this module works on the received ``bytes``/``bytearray``
directly with precompiled :class:`struct.Struct` objects instead of building packet objects: reading a
header is one ``unpack_from``, rewriting it one ``pack_into`` on a ``bytearray`` (no copy of the payload).

Malformed input is never raised: :func:`parse_rtp` returns a :class:`Malformed` member saying why, so the
edge counts it and drops the packet (RFC 3550 §A.1 lists the validity checks used here).
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

__all__ = [
    "RTP_HEADER",
    "Malformed",
    "RtpHeader",
    "is_rtcp",
    "parse_rtp",
    "payload_offset",
]

#: V/P/X/CC, M/PT, sequence number, timestamp, SSRC (RFC 3550 §5.1).
RTP_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
RTP_MIN_SIZE = 12
MAX_PACKET_SIZE = 1500


class Malformed(enum.Enum):
    """Why a datagram is not a usable RTP packet (RFC 3550 §A.1)."""

    TOO_SHORT = "too short"
    TOO_LONG = "too long"
    BAD_VERSION = "version is not 2"
    BAD_CSRC = "CSRC list runs past the end"
    BAD_EXTENSION = "header extension runs past the end"
    BAD_PADDING = "padding count invalid"
    RTCP = "RTCP payload type on the RTP path"


class RtpHeader(NamedTuple):
    """The fields of an RTP fixed header, plus where the payload starts and ends (padding excluded)."""

    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RTP/RTCP demultiplexing on one port (RFC 5761 §4): RTCP packet types 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def payload_offset(data: bytes | bytearray | memoryview) -> int | Malformed:
    """Offset of the payload after CSRCs and header extension, or why the header is invalid."""
    size = len(data)
    if size < RTP_MIN_SIZE:
        return Malformed.TOO_SHORT
    first = data[0]
    if first >> 6 != 2:
        return Malformed.BAD_VERSION
    offset = RTP_MIN_SIZE + 4 * (first & 0x0F)
    if offset > size:
        return Malformed.BAD_CSRC
    if first & 0x10:
        if offset + 4 > size:
            return Malformed.BAD_EXTENSION
        _, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4 + 4 * words
        if offset > size:
            return Malformed.BAD_EXTENSION
    return offset


_tuple_new = tuple.__new__
_unpack_header = RTP_HEADER.unpack_from


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpHeader | Malformed:
    """Validate and read an RTP packet's header (RFC 3550 §5.1, §A.1). Never raises.

    Per packet on every call, so the usual packet — version 2, no padding, extension or CSRCs (first
    byte 0x80) — takes a short path, and the header tuple is built with ``tuple.__new__`` (a NamedTuple's
    own ``__new__`` is a Python function: one more frame per packet).
    """
    size = len(data)
    if size > MAX_PACKET_SIZE:
        return Malformed.TOO_LONG
    if size >= RTP_MIN_SIZE and data[0] == 0x80:
        first, second, seq, ts, ssrc = _unpack_header(data, 0)
        if 192 <= second <= 223:
            return Malformed.RTCP
        return _tuple_new(RtpHeader, (second > 127, second & 0x7F, seq, ts, ssrc, RTP_MIN_SIZE, size))
    offset = payload_offset(data)
    if isinstance(offset, Malformed):
        return offset
    first, second, seq, ts, ssrc = RTP_HEADER.unpack_from(data, 0)
    if 192 <= second <= 223:
        return Malformed.RTCP
    end = size
    if first & 0x20:
        padding = data[size - 1]
        if padding == 0 or offset + padding > size:
            return Malformed.BAD_PADDING
        end -= padding
    return RtpHeader(bool(second & 0x80), second & 0x7F, seq, ts, ssrc, offset, end)


def build_rtp(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytearray:
    """A minimal RTP packet (no CSRCs, extension or padding)."""
    packet = bytearray(RTP_MIN_SIZE + len(payload))
    RTP_HEADER.pack_into(
        packet,
        0,
        0x80,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        sequence_number & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    packet[RTP_MIN_SIZE:] = payload
    return packet
