"""User Data Header (3GPP TS 23.040 §9.2.3.24): the concatenation information elements.

A UDH is UDHL (one octet) followed by information elements (IEI, length, data).
We write IEI 0x00 (8-bit reference, §9.2.3.24.1) or 0x08 (16-bit reference,
§9.2.3.24.8) and read both, skipping any other element (ports, national language
shifts, …) so that a header we do not fully understand still reassembles.
"""

from __future__ import annotations

from dataclasses import dataclass

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08


class UdhError(ValueError):
    """The user data header is truncated or its lengths do not add up."""


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """One part of a concatenated message: reference, total parts, this part's number (1-based)."""

    reference: int
    total: int
    seqnum: int
    wide: bool = False  # 16-bit reference


def concat_header(reference: int, total: int, seqnum: int, *, wide: bool = False) -> bytes:
    """UDHL + one concatenation IE: 6 octets (8-bit reference) or 7 (16-bit)."""
    if wide:
        r = reference & 0xFFFF
        return bytes((6, IEI_CONCAT_16, 4, r >> 8, r & 0xFF, total, seqnum))
    return bytes((5, IEI_CONCAT_8, 3, reference & 0xFF, total, seqnum))


def split_udh(short_message: bytes) -> tuple[bytes, bytes]:
    """(header including UDHL, body) of a short_message whose esm_class has UDHI set."""
    if not short_message:
        raise UdhError("UDHI set but short_message is empty")
    end = 1 + short_message[0]
    if end > len(short_message):
        raise UdhError(f"UDHL {short_message[0]} exceeds short_message length {len(short_message)}")
    return short_message[:end], short_message[end:]


def parse_concat(header: bytes) -> ConcatInfo | None:
    """The concatenation element of a UDH (with its UDHL octet), or None if it has none."""
    i = 1
    n = len(header)
    found: ConcatInfo | None = None
    while i + 2 <= n:
        iei = header[i]
        length = header[i + 1]
        data = header[i + 2 : i + 2 + length]
        if len(data) != length:
            raise UdhError(f"IE 0x{iei:02x} truncated")
        if iei == IEI_CONCAT_8 and length == 3:
            found = ConcatInfo(data[0], data[1], data[2])
        elif iei == IEI_CONCAT_16 and length == 4:
            found = ConcatInfo((data[0] << 8) | data[1], data[2], data[3], wide=True)
        i += 2 + length
    if found is not None and (found.total == 0 or found.seqnum == 0 or found.seqnum > found.total):
        # §9.2.3.24.1: such an element is ignored, the message treated as a single part.
        return None
    return found


def fill_bits(header_len: int) -> int:
    """Zero bits after a UDH of *header_len* octets so GSM septets start aligned (§9.2.3.24)."""
    return (7 - (header_len * 8) % 7) % 7
