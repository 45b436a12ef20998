"""Dialog state (RFC 3261 §12): route sets, remote target, CSeq spaces, loose and strict routing, §14.1
glare delays."""

from __future__ import annotations

import random

import pytest

from sip.dialog import Dialog, DialogState, glare_retry_delay
from sip.errors import DialogError
from sip.message import Request, make_response

INVITE = Request(
    "INVITE",
    "sip:bob@biloxi.example.com",
    [
        ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK1"),
        ("From", '"Alice" <sip:alice@atlanta.example.com>;tag=a1'),
        ("To", "<sip:bob@biloxi.example.com>"),
        ("Call-ID", "c1"),
        ("CSeq", "10 INVITE"),
        ("Contact", "<sip:alice@pc33.atlanta.example.com>"),
        ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
    ],
)


def ok(contact: str = "<sip:bob@192.0.2.4>") -> object:
    return make_response(INVITE, 200, to_tag="b1", extra=[("Contact", contact)])


def test_uac_dialog_reverses_record_route_and_targets_contact() -> None:
    resp = make_response(INVITE, 200, to_tag="b1", extra=[("Contact", "<sip:bob@192.0.2.4>")])
    d = Dialog.from_uac(INVITE, resp)
    assert d.id == ("c1", "a1", "b1")
    assert d.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert d.remote_target == "sip:bob@192.0.2.4"
    assert d.state is DialogState.CONFIRMED and d.local_seq == 10 and d.remote_seq is None
    bye = d.create_request("BYE", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2", None)
    assert bye.uri == "sip:bob@192.0.2.4"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert bye.cseq == (11, "BYE")
    assert bye.from_.tag == "a1" and bye.to.tag == "b1" and bye.from_.display == "Alice"


def test_uas_dialog_keeps_record_route_order_and_starts_its_own_cseq() -> None:
    d = Dialog.from_uas(INVITE, "b1", confirmed=True)
    assert d.id == ("c1", "b1", "a1")
    assert d.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert d.remote_target == "sip:alice@pc33.atlanta.example.com"
    assert d.remote_seq == 10 and d.local_seq is None
    bye = d.create_request("BYE", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK3", None)
    assert bye.from_.tag == "b1" and bye.to.tag == "a1"
    assert bye.to.display == "Alice"
    assert d.local_seq is not None and bye.cseq.number == d.local_seq


def test_strict_router_gets_the_request_uri_and_remote_target_goes_last() -> None:
    invite = Request("INVITE", INVITE.uri, list(INVITE.headers.items()))
    invite.headers.set("Record-Route", "<sip:strict.example.com>")
    d = Dialog.from_uac(
        invite, make_response(invite, 200, to_tag="b", extra=[("Contact", "<sip:bob@192.0.2.4>")])
    )
    req = d.create_request("INFO", "SIP/2.0/UDP h;branch=z9hG4bK4", None)
    assert req.uri == "sip:strict.example.com"
    assert req.headers.get_all("Route") == ["<sip:bob@192.0.2.4>"]


def test_out_of_order_requests_are_rejected_and_ack_cancel_are_not_checked() -> None:
    d = Dialog.from_uas(INVITE, "b1", confirmed=True)
    later = Request("INFO", "sip:x", list(INVITE.headers.items()))
    later.headers.set("CSeq", "12 INFO")
    later.invalidate()
    assert d.check_request(later) is None and d.remote_seq == 12
    earlier = Request("INFO", "sip:x", list(INVITE.headers.items()))
    earlier.headers.set("CSeq", "11 INFO")
    assert d.check_request(earlier) == 500
    ack = Request("ACK", "sip:x", list(INVITE.headers.items()))
    ack.headers.set("CSeq", "10 ACK")
    assert d.check_request(ack) is None and d.remote_seq == 12


def test_target_refresh_and_terminated_dialog() -> None:
    d = Dialog.from_uas(INVITE, "b1", confirmed=True)
    reinvite = Request("INVITE", "sip:x", list(INVITE.headers.items()))
    reinvite.headers.set("Contact", "<sip:alice@198.51.100.7:5080>")
    d.refresh_target(reinvite)
    assert d.remote_target == "sip:alice@198.51.100.7:5080"
    d.state = DialogState.TERMINATED
    with pytest.raises(DialogError):
        d.create_request("BYE", "SIP/2.0/UDP h;branch=z9hG4bK5", None)


def test_dialog_needs_a_to_tag() -> None:
    with pytest.raises(DialogError):
        Dialog.from_uac(INVITE, make_response(INVITE, 180))


def test_glare_delays_follow_14_1() -> None:
    rng = random.Random(1)
    owner = [glare_retry_delay(True, rng) for _ in range(500)]
    other = [glare_retry_delay(False, rng) for _ in range(500)]
    assert min(owner) >= 2.1 and max(owner) <= 4.0
    assert min(other) >= 0.0 and max(other) <= 2.0
    assert all(abs(x * 100 - round(x * 100)) < 1e-9 for x in owner + other)  # 10 ms units
