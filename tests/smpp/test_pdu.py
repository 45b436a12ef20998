"""PDU codec: round trips, framing, and malformed input as named errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smpp import pdu as P
from smpp.pdu import CommandId as C


def test_submit_sm_roundtrip_with_tlvs() -> None:
    sm = P.ShortMessage(
        C.SUBMIT_SM,
        7,
        source_addr="Tele",
        source_addr_ton=5,
        destination_addr="4915112345678",
        dest_addr_ton=1,
        dest_addr_npi=1,
        esm_class=0x40,
        registered_delivery=1,
        data_coding=8,
        short_message=b"\x05\x00\x03\x01\x02\x01\x00a",
        tlvs={P.Tag.USER_MESSAGE_REFERENCE: b"\x00\x01"},
    )
    assert P.decode(P.encode(sm)) == sm


def test_bind_transceiver_layout_matches_section_4_1() -> None:
    b = P.Bind(C.BIND_TRANSCEIVER, 1, system_id="esme", password="pw", system_type="SMS")
    raw = P.encode(b)
    length, cid, status, seq = struct.unpack(">IIII", raw[:16])
    assert (length, cid, status, seq) == (len(raw), 9, 0, 1)
    assert raw[16:] == b"esme\0pw\0SMS\0\x34\x00\x00\0"
    assert P.decode(raw) == b


def test_submit_sm_resp_with_error_has_no_body() -> None:
    raw = P.encode(P.MessageIdResp(C.SUBMIT_SM_RESP, 3, P.Status.ESME_RTHROTTLED))
    assert len(raw) == 16
    resp = P.decode(raw)
    assert isinstance(resp, P.MessageIdResp) and resp.message_id == "" and resp.command_status == 0x58


def test_reader_frames_split_and_coalesced_stream() -> None:
    a = P.encode(P.Pdu(C.ENQUIRE_LINK, 1))
    b = P.encode(P.MessageIdResp(C.SUBMIT_SM_RESP, 2, message_id="abc"))
    r = P.PduReader()
    stream = a + b
    assert r.feed(stream[:5]) == []
    assert r.feed(stream[5:20]) == [a]
    assert r.feed(stream[20:]) == [b]


def test_impossible_command_length_is_a_framing_error() -> None:
    with pytest.raises(P.FramingError):
        P.PduReader().feed(struct.pack(">I", 3) + b"\0" * 12)


def test_unknown_command_id_carries_status_and_sequence() -> None:
    with pytest.raises(P.PduError) as e:
        P.decode(struct.pack(">IIII", 16, 0x77, 0, 42))
    assert e.value.status == P.Status.ESME_RINVCMDID and e.value.sequence_number == 42


def test_truncated_submit_is_pdu_error() -> None:
    raw = P.encode(P.ShortMessage(C.DELIVER_SM, 5, short_message=b"hello"))
    broken = struct.pack(">I", len(raw) - 3) + raw[4:-3]
    with pytest.raises(P.PduError):
        P.decode(broken)


def test_unterminated_address_is_pdu_error() -> None:
    body = b"\0" + b"\0\0" + b"1" * 30
    with pytest.raises(P.PduError) as e:
        P.decode(struct.pack(">IIII", 16 + len(body), C.DELIVER_SM, 0, 1) + body)
    assert e.value.status == P.Status.ESME_RINVSRCADR


def test_too_long_field_is_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        P.encode(P.Bind(C.BIND_TRANSCEIVER, 1, system_id="x" * 16))


@given(st.binary(max_size=200), st.sampled_from([int(c) for c in C] + [0x1234]))
def test_decode_of_garbage_only_raises_pdu_error(body: bytes, cid: int) -> None:
    raw = struct.pack(">IIII", 16 + len(body), cid, 0, 1) + body
    try:
        P.decode(raw)
    except P.PduError:
        pass
