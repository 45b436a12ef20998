"""Splitting a text into SMS segments (3GPP TS 23.040 §9.2.3.24.1, SMPP 3.4 §5.3.2.22-24).

One SMS carries 140 octets of user data: 160 GSM septets, 140 Latin-1 octets or 70 UCS-2
code units. A longer text is sent as several segments tied together either by a user
data header (UDH, the default: it survives every SMSC), by the SAR TLVs (the SMSC builds
the UDH), or as a single PDU with a `message_payload` TLV (the SMSC splits). The header
costs room: 6 octets for an 8-bit reference, 7 for a 16-bit one.

Cuts are made between characters as the alphabet counts them: a GSM extension character
(escape + code) and a UTF-16 surrogate pair are never split, so every segment decodes on
its own. The number of segments is what carriers bill; `count_segments` exposes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smpp import encoding, gsm7, udh
from smpp.encoding import Alphabet
from smpp.pdu import ESM_UDHI, Tag


class Concatenation(enum.Enum):
    """How the parts of a long message are tied together, per route."""

    UDH8 = "udh8"
    UDH16 = "udh16"
    SAR = "sar"
    PAYLOAD = "payload"


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    """Route configuration that changes how a text becomes PDUs."""

    concatenation: Concatenation = Concatenation.UDH8
    max_segments: int = 10
    allow_latin1: bool = False
    gsm7_packed: bool = False  # send data_coding 0 packed (TS 23.038 §6.1.2.1.1)


class TooManySegmentsError(ValueError):
    """The text needs more segments than the route allows: tell the sender, send nothing."""

    def __init__(self, needed: int, maximum: int) -> None:
        super().__init__(f"message needs {needed} SMS segments, at most {maximum} are allowed")
        self.needed = needed
        self.maximum = maximum


@dataclass(frozen=True, slots=True)
class Segment:
    """One submit_sm's worth of a message: what goes in short_message, esm_class, TLVs."""

    index: int  # 1-based
    total: int
    text: str
    data_coding: int
    esm_class: int
    short_message: bytes
    tlvs: tuple[tuple[int, bytes], ...] = ()


# Capacity of one segment in the alphabet's units: (single, with 8-bit UDH, with 16-bit UDH).
_CAPACITY: dict[Alphabet, tuple[int, int, int]] = {
    Alphabet.GSM7: (160, 153, 152),
    Alphabet.LATIN1: (140, 134, 133),
    Alphabet.UCS2: (70, 67, 66),
}


def _multi_capacity(alphabet: Alphabet, concat: Concatenation) -> int:
    caps = _CAPACITY[alphabet]
    if concat is Concatenation.UDH8 or concat is Concatenation.PAYLOAD:
        return caps[1]
    # SAR: the SMSC builds the UDH and may use a 16-bit reference; assume the smaller room.
    return caps[2]


def _cost_function(alphabet: Alphabet) -> dict[str, int] | None:
    return gsm7.SEPTET_COST if alphabet is Alphabet.GSM7 else None


def _chunks(text: str, alphabet: Alphabet, capacity: int) -> list[str]:
    """Greedy cut of *text* into pieces of at most *capacity* units, never inside a character."""
    out: list[str] = []
    start = 0
    used = 0
    cost = _cost_function(alphabet)
    ucs2 = alphabet is Alphabet.UCS2
    for i, c in enumerate(text):
        if cost is not None:
            w = cost[c]
        elif ucs2:
            w = 2 if ord(c) > 0xFFFF else 1
        else:
            w = 1
        if used + w > capacity:
            out.append(text[start:i])
            start = i
            used = 0
        used += w
    out.append(text[start:])
    return out


def plan(text: str, policy: SegmentPolicy = SegmentPolicy()) -> tuple[Alphabet, list[str]]:
    """Alphabet and the text of each segment, without encoding anything."""
    text = encoding.sanitize(text)
    alphabet = encoding.choose_alphabet(text, allow_latin1=policy.allow_latin1)
    single = _CAPACITY[alphabet][0]
    if encoding.units(text, alphabet) <= single:
        return alphabet, [text]
    return alphabet, _chunks(text, alphabet, _multi_capacity(alphabet, policy.concatenation))


def count_segments(text: str, policy: SegmentPolicy = SegmentPolicy()) -> int:
    """How many SMS the text costs on this route (what a carrier bills), even for message_payload."""
    return len(plan(text, policy)[1])


def split(text: str, reference: int, policy: SegmentPolicy = SegmentPolicy()) -> list[Segment]:
    """The segments to submit for *text*. *reference* ties the parts together (0..255 for an
    8-bit UDH, 0..65535 otherwise); use the same one when resubmitting a part.

    Raises TooManySegmentsError when the route's maximum is exceeded.
    """
    alphabet, pieces = plan(text, policy)
    total = len(pieces)
    if total > policy.max_segments:
        raise TooManySegmentsError(total, policy.max_segments)
    packed = policy.gsm7_packed and alphabet is Alphabet.GSM7
    concat = policy.concatenation

    if concat is Concatenation.PAYLOAD and total > 1:
        enc = encoding.encode(encoding.sanitize(text), alphabet)
        data = gsm7.pack(enc.data) if packed else enc.data
        whole = "".join(pieces)
        return [Segment(1, 1, whole, enc.data_coding, 0, b"", ((Tag.MESSAGE_PAYLOAD, data),))]

    out: list[Segment] = []
    for index, piece in enumerate(pieces, 1):
        enc = encoding.encode(piece, alphabet)
        if total == 1:
            data = gsm7.pack(enc.data) if packed else enc.data
            out.append(Segment(1, 1, piece, enc.data_coding, 0, data))
        elif concat is Concatenation.SAR:
            data = gsm7.pack(enc.data) if packed else enc.data
            tlvs = (
                (Tag.SAR_MSG_REF_NUM, (reference & 0xFFFF).to_bytes(2, "big")),
                (Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
                (Tag.SAR_SEGMENT_SEQNUM, bytes((index,))),
            )
            out.append(Segment(index, total, piece, enc.data_coding, 0, data, tlvs))
        else:
            header = udh.concat_header(reference, total, index, wide=concat is Concatenation.UDH16)
            data = gsm7.pack(enc.data, udh.fill_bits(len(header))) if packed else enc.data
            out.append(Segment(index, total, piece, enc.data_coding, ESM_UDHI, header + data))
    return out
