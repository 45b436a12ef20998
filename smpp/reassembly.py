"""Reassembling concatenated inbound SMS (TS 23.040 §9.2.3.24.1, SMPP 3.4 §5.3.2.22-24).

Parts arrive in any order, over any bind, possibly twice (an SMSC redelivers a part
whose deliver_sm_resp it did not get). A `Reassembler` is fed parts and time and
answers with a completed message, "still waiting", or "duplicate"; parts that wait too
long come out of `expire()` as an incomplete message (with the missing part numbers)
so that nothing received is ever silently dropped. Sans-I/O: no clock, no tasks.

Raw bodies are joined before decoding, so a sender that split a surrogate pair or an
escape sequence across parts still yields the right text.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from smpp import encoding, gsm7, udh
from smpp.encoding import DefaultAlphabet
from smpp.pdu import ESM_UDHI, DataSm, ShortMessage, Tag, tlv_int

# (source, destination, reference, total)
PartKey = tuple[str, str, int, int]


def part_key(part: Part) -> PartKey:
    """Which message a concatenated part belongs to (it has a reference)."""
    assert part.reference is not None
    return (part.source, part.destination, part.reference, part.total)


@dataclass(frozen=True, slots=True)
class Part:
    """One deliver_sm/data_sm body, with its concatenation information if any.

    *body* is septets (unpacked) for GSM, octets otherwise, without the UDH.
    """

    source: str
    destination: str
    data_coding: int
    body: bytes
    reference: int | None = None
    total: int = 1
    seqnum: int = 1


@dataclass(frozen=True, slots=True)
class InboundText:
    """A whole (or, after a timeout, partial) inbound message, decoded."""

    source: str
    destination: str
    text: str
    data_coding: int
    parts: int
    missing: tuple[int, ...] = ()  # part numbers never received (timed out)
    key: PartKey | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    key: PartKey
    received: int
    total: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A part seen before. *completed* means the whole message was already handed out."""

    key: PartKey
    completed: bool


AddResult = InboundText | Pending | Duplicate


def part_from_pdu(pdu: ShortMessage | DataSm, default: DefaultAlphabet = DefaultAlphabet.GSM7) -> Part:
    """Extract text body and concatenation info (UDH first, then SAR TLVs) from an inbound PDU.

    Raises udh.UdhError for a header that does not parse.
    """
    if isinstance(pdu, ShortMessage):
        raw = pdu.short_message or pdu.tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    else:
        raw = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    dc = pdu.data_coding
    packed = dc == 0 and default is DefaultAlphabet.GSM7_PACKED
    reference: int | None = None
    total = seqnum = 1
    if pdu.esm_class & ESM_UDHI:
        header, body = udh.split_udh(raw)
        info = udh.parse_concat(header)
        if info is not None:
            reference, total, seqnum = info.reference, info.total, info.seqnum
        if packed:
            body = gsm7.unpack(body, udh.fill_bits(len(header)))
    else:
        body = gsm7.unpack(raw) if packed else raw
    if reference is None:
        ref = tlv_int(pdu.tlvs, Tag.SAR_MSG_REF_NUM)
        tot = tlv_int(pdu.tlvs, Tag.SAR_TOTAL_SEGMENTS)
        seq = tlv_int(pdu.tlvs, Tag.SAR_SEGMENT_SEQNUM)
        if ref is not None and tot and seq and seq <= tot:
            reference, total, seqnum = ref, tot, seq
    if packed:
        dc = -1  # body is unpacked septets now; decode as GSM
    return Part(pdu.source_addr, pdu.destination_addr, dc, body, reference, total, seqnum)


def decode_parts(parts: list[Part], default: DefaultAlphabet = DefaultAlphabet.GSM7) -> str:
    """Join raw bodies then decode once when every part shares a data_coding."""
    if not parts:
        return ""
    dc = parts[0].data_coding
    if all(p.data_coding == dc for p in parts):
        return _decode(b"".join(p.body for p in parts), dc, default)
    return "".join(_decode(p.body, p.data_coding, default) for p in parts)


def _decode(body: bytes, dc: int, default: DefaultAlphabet) -> str:
    if dc == -1:
        return gsm7.decode(body)
    if dc == 0 and default is DefaultAlphabet.GSM7_PACKED:
        return gsm7.decode(body)  # already unpacked by part_from_pdu
    return encoding.decode(body, dc, default=default)


class _Buffer:
    __slots__ = ("deadline", "parts")

    def __init__(self, deadline: float) -> None:
        self.parts: dict[int, Part] = {}
        self.deadline = deadline


class Reassembler:
    """Collects parts per (source, destination, reference, total).

    *timeout*: how long after its first part an incomplete message is given up on
    (then handed out with `missing` set). *remember*: how long a completed message's
    key is kept so late duplicates are recognised instead of starting a new message.
    """

    def __init__(
        self,
        timeout: float = 60.0,
        remember: float = 600.0,
        default: DefaultAlphabet = DefaultAlphabet.GSM7,
        max_pending: int = 10_000,
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.remember = remember
        self.default = default
        self._buffers: dict[PartKey, _Buffer] = {}
        self._completed: dict[PartKey, float] = {}
        self._deadlines: list[tuple[float, PartKey]] = []

    def __len__(self) -> int:
        return len(self._buffers)

    def add(self, part: Part, now: float) -> AddResult:
        """Feed one part; a single (unconcatenated) part completes at once."""
        if part.reference is None or part.total <= 1:
            text = decode_parts([part], self.default)
            return InboundText(part.source, part.destination, text, part.data_coding, 1)
        key = part_key(part)
        if key in self._completed:
            return Duplicate(key, True)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) >= self.max_pending:
                self._evict_oldest(now)
            buf = self._buffers[key] = _Buffer(now + self.timeout)
            heapq.heappush(self._deadlines, (buf.deadline, key))
        if part.seqnum in buf.parts:
            return Duplicate(key, False)
        buf.parts[part.seqnum] = part
        if len(buf.parts) < part.total:
            return Pending(key, len(buf.parts), part.total)
        del self._buffers[key]
        self._completed[key] = now + self.remember
        heapq.heappush(self._deadlines, (now + self.remember, key))
        ordered = [buf.parts[i] for i in range(1, part.total + 1)]
        return InboundText(
            part.source,
            part.destination,
            decode_parts(ordered, self.default),
            ordered[0].data_coding,
            part.total,
            key=key,
        )

    def _evict_oldest(self, now: float) -> None:
        """Too many messages waiting for parts (a flood, or a broken sender): make the oldest
        due now, so the next `expire` hands it out incomplete instead of memory growing."""
        oldest = min(self._buffers.items(), key=lambda kv: kv[1].deadline)
        if oldest[1].deadline > now:
            oldest[1].deadline = now
            heapq.heappush(self._deadlines, (now, oldest[0]))

    def is_completed(self, key: PartKey) -> bool:
        """The message with this key was handed out recently (a part now is a duplicate)."""
        return key in self._completed

    def forget(self, key: PartKey) -> None:
        """Drop a completed key (its message could not be stored): a redelivery starts afresh."""
        self._completed.pop(key, None)

    def get_timer(self) -> float | None:
        """When `expire` next has something to do."""
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[InboundText]:
        """Hand out messages whose missing parts did not come in time; forget old completions."""
        out: list[InboundText] = []
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            deadline, key = heapq.heappop(dl)
            buf = self._buffers.get(key)
            if buf is not None and buf.deadline == deadline:
                del self._buffers[key]
                self._completed[key] = now + self.remember
                heapq.heappush(dl, (now + self.remember, key))
                total = key[3]
                have = [buf.parts[i] for i in sorted(buf.parts)]
                missing = tuple(i for i in range(1, total + 1) if i not in buf.parts)
                out.append(
                    InboundText(
                        key[0],
                        key[1],
                        decode_parts(have, self.default),
                        have[0].data_coding,
                        total,
                        missing,
                        key,
                    )
                )
            elif key in self._completed and self._completed[key] == deadline:
                del self._completed[key]
        return out
