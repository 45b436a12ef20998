"""Virtual user IDs: MSC2845's shape, exact inverses, one ID per number."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.numbers import NotDialable
from telebridge.puppet import NotAVirtualUser, VirtualUserNamespace, decode_localpart, encode_localpart

NS = VirtualUserNamespace(prefix="_sip_", domain="example.org", gateway_host="sip.example.org")
SIP_URI_CHARS = st.text(
    alphabet=st.sampled_from("0123456789+*#abcdefxyzABCXYZ-_.!~'()&=$,;?/%@:[]\u00e9\u20ac"),
    min_size=1,
    max_size=40,
)


def test_msc2845_example_user_id() -> None:
    assert NS.user_id("01818118181") == "@_sip_01818118181%40sip.example.org:example.org"


@given(SIP_URI_CHARS)
def test_encoding_and_decoding_are_exact_inverses(text: str) -> None:
    encoded = encode_localpart(text)
    assert decode_localpart(encoded) == text
    assert encoded == encoded.lower(), "localparts stay lowercase"
    assert ":" not in encoded and "@" not in encoded


@given(st.text(alphabet=st.sampled_from("0123456789*#"), min_size=1, max_size=20), st.booleans())
def test_every_dialable_number_maps_to_one_id_and_back(digits: str, plus: bool) -> None:
    number = ("+" if plus else "") + digits
    if not any(c.isdigit() for c in number):
        with pytest.raises(NotDialable):
            NS.user_id(number)
        return
    user_id = NS.user_id(number)
    party = NS.party(user_id)
    assert party.number == number
    assert party.host == "sip.example.org"


@given(st.text(max_size=30))
def test_decoding_arbitrary_localparts_never_raises_anything_unexpected(localpart: str) -> None:
    try:
        text = decode_localpart(localpart)
    except NotAVirtualUser:
        return
    assert encode_localpart(text) == localpart, "only canonical forms decode"


@pytest.mark.parametrize(
    "user_id",
    [
        "@_sip_0123%40sip.example.org:other.org",  # other homeserver
        "@other_0123%40sip.example.org:example.org",  # other prefix
        "@_sip_0123%40SIP.example.org:example.org",  # uppercase is never produced
        "@_sip_0123%2B%40sip.example.org:example.org",  # uppercase hex is not canonical
        "@_sip_%30123%40sip.example.org:example.org",  # needless escape of a digit
        "@_sip_0123:example.org",  # no host
        "@_sip_abc%40sip.example.org:example.org",  # not a number
        "@_sip_0123%40gw.example.net:example.org",  # not our gateway
        "@_sip_%2b%40sip.example.org:example.org",  # no digits
        "@_sip_01%2023%40sip.example.org:example.org",  # separators are dropped before encoding
        "@_sip_%ff%40sip.example.org:example.org",  # not UTF-8
    ],
)
def test_ids_that_are_not_exactly_ours_are_rejected(user_id: str) -> None:
    with pytest.raises(NotAVirtualUser):
        NS.party(user_id)


def test_visual_separators_are_dropped_but_nothing_is_canonicalised() -> None:
    assert NS.user_id("+44 (20) 7946-0000") == NS.user_id("+442079460000")
    assert NS.user_id("020 7946 0000") != NS.user_id("+442079460000")
