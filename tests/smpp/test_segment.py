"""Segmentation: limits per alphabet, UDH/SAR/message_payload, never splitting characters."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp import gsm7, udh
from smpp.encoding import DefaultAlphabet
from smpp.pdu import ESM_UDHI, ShortMessage, Tag
from smpp.reassembly import InboundText, Reassembler, part_from_pdu
from smpp.segment import Concatenation, SegmentPolicy, TooManySegmentsError, count_segments, split

GSM_CHARS = "".join(c for c in gsm7.BASIC_TABLE if c != "\x1b") + "".join(gsm7.EXTENSION_TABLE.values())


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),
        ("é" * 70 + "ç", 2),  # ç forces UCS-2: 71 units
        ("ç" * 70, 1),
        ("ç" * 134, 2),
        ("ç" * 135, 3),
        ("😀" * 35, 1),  # 70 code units
        ("😀" * 36, 2),
    ],
)
def test_segment_counts_follow_the_140_octet_limit(text: str, segments: int) -> None:
    assert count_segments(text) == segments


def test_sixteen_bit_reference_leaves_one_unit_less() -> None:
    policy = SegmentPolicy(concatenation=Concatenation.UDH16)
    assert count_segments("a" * 304, policy) == 2
    assert count_segments("a" * 305, policy) == 3
    assert count_segments("a" * 305) == 2


def test_latin1_only_when_route_allows_it() -> None:
    text = "ç" * 140
    assert count_segments(text) == 3
    assert count_segments(text, SegmentPolicy(allow_latin1=True)) == 1


def test_escape_sequence_is_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10
    segs = split(text, 7)
    assert [s.text for s in segs] == ["a" * 152, "€" + "b" * 10]
    assert segs[0].short_message[6:] == b"a" * 152
    assert segs[1].short_message[6:8] == b"\x1b\x65"


def test_surrogate_pair_is_never_split() -> None:
    text = "x" * 66 + "😀" + "y" * 5
    segs = split(text, 1)
    assert [s.text for s in segs] == ["x" * 66, "😀yyyyy"]
    for s in segs:
        s.short_message[6:].decode("utf-16-be")  # each part decodes alone


def test_udh8_header_and_esm_class() -> None:
    segs = split("a" * 200, 0x1AB)
    assert [s.short_message[:6] for s in segs] == [
        bytes((5, 0, 3, 0xAB, 2, 1)),
        bytes((5, 0, 3, 0xAB, 2, 2)),
    ]
    assert all(s.esm_class == ESM_UDHI and s.data_coding == 0 for s in segs)


def test_udh16_header() -> None:
    segs = split("a" * 200, 0x1234, SegmentPolicy(concatenation=Concatenation.UDH16))
    assert segs[1].short_message[:7] == bytes((6, 8, 4, 0x12, 0x34, 2, 2))


def test_sar_tlvs_instead_of_udh() -> None:
    segs = split("ç" * 100, 0x0102, SegmentPolicy(concatenation=Concatenation.SAR))
    assert len(segs) == 2
    tlvs = dict(segs[1].tlvs)
    assert tlvs[Tag.SAR_MSG_REF_NUM] == b"\x01\x02"
    assert tlvs[Tag.SAR_TOTAL_SEGMENTS] == b"\x02"
    assert tlvs[Tag.SAR_SEGMENT_SEQNUM] == b"\x02"
    assert segs[1].esm_class == 0
    assert segs[0].short_message == ("ç" * 66).encode("utf-16-be")


def test_message_payload_sends_one_pdu_but_counts_segments() -> None:
    policy = SegmentPolicy(concatenation=Concatenation.PAYLOAD)
    text = "a" * 400
    segs = split(text, 1, policy)
    assert len(segs) == 1
    assert segs[0].short_message == b""
    assert dict(segs[0].tlvs)[Tag.MESSAGE_PAYLOAD] == b"a" * 400
    assert count_segments(text, policy) == 3


def test_too_many_segments_is_a_named_error() -> None:
    with pytest.raises(TooManySegmentsError) as e:
        split("a" * 1000, 1, SegmentPolicy(max_segments=3))
    assert (e.value.needed, e.value.maximum) == (7, 3)


def test_packed_gsm_with_udh_uses_fill_bit() -> None:
    segs = split("a" * 200, 5, SegmentPolicy(gsm7_packed=True))
    body = segs[0].short_message[6:]
    assert gsm7.decode(gsm7.unpack(body, udh.fill_bits(6))) == "a" * 153


def _reassemble(segments: list, policy: SegmentPolicy, order: list[int] | None = None) -> InboundText | None:
    default = DefaultAlphabet.GSM7_PACKED if policy.gsm7_packed else DefaultAlphabet.GSM7
    r = Reassembler(default=default)
    result = None
    indices = order if order is not None else list(range(len(segments)))
    for i in indices:
        s = segments[i]
        tlvs = dict(s.tlvs)
        if Tag.MESSAGE_PAYLOAD in tlvs:
            pdu = ShortMessage(5, data_coding=s.data_coding, esm_class=s.esm_class, tlvs=tlvs)
        else:
            pdu = ShortMessage(
                5, data_coding=s.data_coding, esm_class=s.esm_class, short_message=s.short_message, tlvs=tlvs
            )
        res = r.add(part_from_pdu(pdu, default), 0.0)
        if isinstance(res, InboundText):
            result = res
    return result


policies = st.builds(
    SegmentPolicy,
    concatenation=st.sampled_from(list(Concatenation)),
    max_segments=st.just(255),
    allow_latin1=st.booleans(),
    gsm7_packed=st.booleans(),
)
texts = st.one_of(
    st.text(max_size=700),
    st.text(alphabet=GSM_CHARS, max_size=700),
    st.text(alphabet=st.sampled_from("a€[😀ç\U0001f468\u200d"), max_size=400),
)


@settings(max_examples=300, deadline=None)
@given(texts, policies, st.integers(0, 65535), st.randoms(use_true_random=False))
def test_split_then_reassemble_is_identity(
    text: str, policy: SegmentPolicy, ref: int, rnd: random.Random
) -> None:
    from smpp.encoding import sanitize

    if policy.gsm7_packed and text.endswith("\r"):
        text += "."  # a trailing CR in the §6.1.2.1.1 pad position is ambiguous by design
    segs = split(text, ref, policy)
    assert len(segs) == (1 if policy.concatenation is Concatenation.PAYLOAD else count_segments(text, policy))
    order = list(range(len(segs)))
    rnd.shuffle(order)
    result = _reassemble(segs, policy, order)
    assert result is not None
    assert result.text == sanitize(text)
    for s in segs:
        assert len(s.short_message) <= 140
