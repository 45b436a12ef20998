"""Delivery receipt parsing: TLVs, Appendix B text and the variations carriers send."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pytest

from smpp.pdu import ESM_TYPE_DELIVERY_RECEIPT, ShortMessage, Tag
from smpp.receipt import NotAReceiptError, Outcome, id_variants, is_receipt, parse


def _dlr(
    text: str, tlvs: Mapping[int, bytes] | None = None, esm: int = ESM_TYPE_DELIVERY_RECEIPT
) -> ShortMessage:
    return ShortMessage(5, esm_class=esm, short_message=text.encode(), tlvs=dict(tlvs or {}))


def test_appendix_b_text() -> None:
    text = (
        "id:0123456789 sub:001 dlvrd:001 submit date:2311231015 done date:2311231016 "
        "stat:DELIVRD err:000 text:Hello world"
    )
    pdu = _dlr(text)
    assert is_receipt(pdu)
    r = parse(pdu, text)
    assert r.message_id == "0123456789"
    assert r.outcome is Outcome.DELIVERED
    assert (r.submitted, r.delivered) == (1, 1)
    assert r.submit_date == datetime(2023, 11, 23, 10, 15)
    assert r.done_date == datetime(2023, 11, 23, 10, 16)
    assert r.text == "Hello world"


@pytest.mark.parametrize(
    ("stat", "outcome"),
    [
        ("DELIVRD", Outcome.DELIVERED),
        ("UNDELIV", Outcome.FAILED),
        ("EXPIRED", Outcome.EXPIRED),
        ("REJECTD", Outcome.REJECTED),
        ("DELETED", Outcome.FAILED),
        ("UNKNOWN", Outcome.UNKNOWN),
        ("ACCEPTD", Outcome.UNKNOWN),
        ("ENROUTE", Outcome.PENDING),
        ("DELIVERED", Outcome.DELIVERED),
        ("FAILED", Outcome.FAILED),
        ("Rejected", Outcome.REJECTED),
        ("BOGUS", Outcome.UNKNOWN),
    ],
)
def test_stat_values_map_to_outcomes(stat: str, outcome: Outcome) -> None:
    text = f"id:abc stat:{stat}"
    assert parse(_dlr(text), text).outcome is outcome


def test_variations_upper_case_underscores_seconds_and_missing_fields() -> None:
    text = "ID:7F3A SUB:1 DLVRD:0 SUBMIT_DATE:231123101501 DONE_DATE:231123101702 STAT:UNDELIV ERR:034 TEXT:"
    r = parse(_dlr(text), text)
    assert r.message_id == "7F3A"
    assert r.outcome is Outcome.FAILED
    assert r.error == "034"
    assert "034" in r.reason
    assert r.done_date == datetime(2023, 11, 23, 10, 17, 2)


def test_text_field_may_contain_keys() -> None:
    text = "id:1 stat:DELIVRD text:stat:UNDELIV id:2"
    r = parse(_dlr(text), text)
    assert r.message_id == "1" and r.outcome is Outcome.DELIVERED and r.text == "stat:UNDELIV id:2"


def test_tlvs_win_over_text() -> None:
    text = "id:999 stat:DELIVRD"
    tlvs: dict[int, bytes] = {
        Tag.RECEIPTED_MESSAGE_ID: b"abc\0",
        Tag.MESSAGE_STATE: b"\x05",
        Tag.NETWORK_ERROR_CODE: b"\x03\x00\x22",
    }
    r = parse(_dlr(text, tlvs), text)
    assert r.message_id == "abc"
    assert r.outcome is Outcome.FAILED
    assert r.error == "GSM 34"
    assert "GSM 34" in r.reason


def test_tlv_only_receipt_without_esm_class() -> None:
    pdu = _dlr("", {Tag.RECEIPTED_MESSAGE_ID: b"m1\0", Tag.MESSAGE_STATE: b"\x03"}, esm=0)
    assert is_receipt(pdu)
    r = parse(pdu, "")
    assert r.outcome is Outcome.EXPIRED and r.reason


def test_no_id_anywhere_is_a_named_error() -> None:
    with pytest.raises(NotAReceiptError):
        parse(_dlr("stat:DELIVRD"), "stat:DELIVRD")


def test_id_variants_cover_hex_decimal_and_padding() -> None:
    assert "255" in id_variants("ff")
    assert "ff" in id_variants("255")
    assert "12" in id_variants("0012")
