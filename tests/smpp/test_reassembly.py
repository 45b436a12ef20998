"""Inbound reassembly with a fake clock: order, duplicates, timeouts, SAR, data_coding."""

from __future__ import annotations

from smpp.pdu import ESM_UDHI, ShortMessage, Tag
from smpp.reassembly import Duplicate, InboundText, Part, Pending, Reassembler, part_from_pdu
from smpp.segment import Concatenation, SegmentPolicy, split


def _deliver(seg_short: bytes, esm: int, dc: int, tlvs: dict[int, bytes] | None = None) -> ShortMessage:
    return ShortMessage(
        5,
        source_addr="4915112345678",
        destination_addr="4930123",
        esm_class=esm,
        data_coding=dc,
        short_message=seg_short,
        tlvs=tlvs or {},
    )


def test_parts_out_of_order_complete_once_all_arrived() -> None:
    text = "😀" * 99  # 198 code units, 33 pairs per part -> 3 UCS-2 parts
    segs = split(text, 42)
    assert len(segs) == 3
    r = Reassembler()
    parts = [part_from_pdu(_deliver(s.short_message, s.esm_class, s.data_coding)) for s in segs]
    assert isinstance(r.add(parts[2], 0.0), Pending)
    assert isinstance(r.add(parts[0], 1.0), Pending)
    done = r.add(parts[1], 2.0)
    assert isinstance(done, InboundText)
    assert done.text == text
    assert done.parts == 3 and done.missing == ()
    assert len(r) == 0


def test_duplicate_part_while_waiting_and_after_completion() -> None:
    segs = split("a" * 200, 9)
    r = Reassembler()
    p1, p2 = (part_from_pdu(_deliver(s.short_message, s.esm_class, 0)) for s in segs)
    r.add(p1, 0.0)
    dup = r.add(p1, 0.5)
    assert isinstance(dup, Duplicate) and not dup.completed
    assert isinstance(r.add(p2, 1.0), InboundText)
    late = r.add(p2, 5.0)
    assert isinstance(late, Duplicate) and late.completed


def test_missing_part_times_out_and_is_handed_out_incomplete() -> None:
    segs = split("x" * 300 + "y" * 10, 3)
    r = Reassembler(timeout=30.0, remember=100.0)
    parts = [part_from_pdu(_deliver(s.short_message, s.esm_class, 0)) for s in segs]
    r.add(parts[0], 10.0)
    r.add(parts[2], 11.0)
    assert r.get_timer() == 40.0
    assert r.expire(39.9) == []
    (msg,) = r.expire(40.0)
    assert msg.missing == (2,)
    assert msg.text == "x" * 153 + "y" * 4  # part 2 (147 x + 6 y) never came
    # the remembered key makes a late part a duplicate, then is forgotten
    assert isinstance(r.add(parts[1], 50.0), Duplicate)
    assert r.expire(140.0) == []
    assert r.get_timer() is None
    assert isinstance(r.add(parts[1], 150.0), Pending)


def test_same_reference_from_two_senders_are_separate_messages() -> None:
    r = Reassembler()
    a1 = Part("A", "D", 0, b"a", 1, 2, 1)
    b1 = Part("B", "D", 0, b"b", 1, 2, 1)
    a2 = Part("A", "D", 0, b"A", 1, 2, 2)
    r.add(a1, 0)
    r.add(b1, 0)
    done = r.add(a2, 0)
    assert isinstance(done, InboundText) and done.text == "aA" and done.source == "A"


def test_sar_tlv_parts_reassemble() -> None:
    segs = split("ç" * 100, 0x0203, SegmentPolicy(concatenation=Concatenation.SAR))
    r = Reassembler()
    res = None
    for s in reversed(segs):
        res = r.add(part_from_pdu(_deliver(s.short_message, 0, 8, dict(s.tlvs))), 0)
    assert isinstance(res, InboundText) and res.text == "ç" * 100


def test_surrogate_pair_split_by_sender_still_decodes() -> None:
    raw = "ab😀".encode("utf-16-be")
    p1 = part_from_pdu(_deliver(bytes((5, 0, 3, 1, 2, 1)) + raw[:6], ESM_UDHI, 8))
    p2 = part_from_pdu(_deliver(bytes((5, 0, 3, 1, 2, 2)) + raw[6:], ESM_UDHI, 8))
    r = Reassembler()
    r.add(p2, 0)
    done = r.add(p1, 0)
    assert isinstance(done, InboundText) and done.text == "ab😀"


def test_single_message_in_message_payload() -> None:
    pdu = _deliver(b"", 0, 0, {Tag.MESSAGE_PAYLOAD: b"hello \x1b\x65"})
    res = Reassembler().add(part_from_pdu(pdu), 0)
    assert isinstance(res, InboundText) and res.text == "hello €"


def test_concat_element_with_seqnum_zero_is_treated_as_single_part() -> None:
    pdu = _deliver(bytes((5, 0, 3, 1, 2, 0)) + b"hi", ESM_UDHI, 0)
    res = Reassembler().add(part_from_pdu(pdu), 0)
    assert isinstance(res, InboundText) and res.text == "hi"


def test_data_sm_payload_with_udh() -> None:
    from smpp.pdu import DataSm

    seg = split("ж" * 80, 5)[1]
    pdu = DataSm(0x103, source_addr="A", destination_addr="B", esm_class=ESM_UDHI, data_coding=8,
                 tlvs={Tag.MESSAGE_PAYLOAD: seg.short_message})  # fmt: skip
    part = part_from_pdu(pdu)
    assert (part.reference, part.total, part.seqnum) == (5, 2, 2)
    assert part.body.decode("utf-16-be") == "ж" * 13


def test_too_many_pending_messages_evicts_the_oldest_through_expire() -> None:
    r = Reassembler(timeout=60, max_pending=2)
    r.add(Part("A", "D", 0, b"a", 1, 2, 1), 0.0)
    r.add(Part("B", "D", 0, b"b", 1, 2, 1), 1.0)
    r.add(Part("C", "D", 0, b"c", 1, 2, 1), 2.0)
    assert r.get_timer() == 2.0
    (evicted,) = r.expire(2.0)
    assert evicted.source == "A" and evicted.missing == (2,)
    assert len(r) == 2
