"""MSC2845 answers, without a server."""

from __future__ import annotations

from telebridge.puppet import VirtualUserNamespace
from telebridge.thirdparty import SIP_NATIVE, SIP_VIRTUAL, Lookup

LOOKUP = Lookup(VirtualUserNamespace("_sip_", "example.org", "sip.example.org"))
V = "@_sip_01818118181%40sip.example.org:example.org"


def test_metadata_for_both_pstn_protocols_has_instances() -> None:
    for protocol in ("m.protocol.pstn", "im.vector.protocol.pstn"):
        status, body = LOOKUP.protocol(protocol)
        assert status == 200
        assert body["user_fields"] == ["m.id.phone"]
        assert body["instances"]
    assert LOOKUP.protocol("m.protocol.irc")[0] == 404


def test_user_lookup_answers_exactly_one_result_as_dialled() -> None:
    status, body = LOOKUP.user("m.protocol.pstn", {"m.id.phone": ["01818118181"]})
    assert status == 200
    assert body == [{"userid": V, "protocol": "m.protocol.pstn", "fields": {"m.id.phone": "01818118181"}}]


def test_user_lookup_errors_carry_matrix_error_codes() -> None:
    assert LOOKUP.user("m.protocol.pstn", {"m.id.phone": ["1", "2"]})[1]["errcode"] == "M_INVALID_PARAM"
    assert LOOKUP.user("m.protocol.pstn", {"m.id.phone": ["nope"]})[1]["errcode"] == "M_INVALID_PARAM"
    assert LOOKUP.user("m.protocol.pstn", {})[1]["errcode"] == "M_MISSING_PARAM"
    assert LOOKUP.user("m.protocol.fax", {"m.id.phone": ["1"]})[0] == 404


def test_virtual_user_is_its_own_native_user() -> None:
    assert LOOKUP.user(SIP_NATIVE, {"virtual_mxid": [V]}) == (
        200,
        [{"userid": V, "protocol": SIP_NATIVE, "fields": {"lookup_success": True}}],
    )
    assert LOOKUP.user(SIP_VIRTUAL, {"native_mxid": [V]})[1][0]["userid"] == V
    assert LOOKUP.user(SIP_VIRTUAL, {"native_mxid": ["@alice:example.org"]}) == (200, [])


def test_reverse_lookup() -> None:
    assert LOOKUP.reverse(V) == (
        200,
        [{"userid": V, "protocol": "m.protocol.pstn", "fields": {"m.id.phone": "01818118181"}}],
    )
    assert LOOKUP.reverse("@alice:example.org")[0] == 404
    assert LOOKUP.reverse(None)[0] == 400
