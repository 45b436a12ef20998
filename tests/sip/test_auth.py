"""Digest arithmetic against the RFC 2617 and RFC 7616 worked examples, both roles, and the allow-list."""

from __future__ import annotations

import pytest

from sip.auth import (
    AllowList,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    digest_response,
    parse_challenge,
)
from sip.errors import SipParseError


def test_rfc2617_md5_qop_auth_example() -> None:
    response = digest_response(
        "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001", "0a4f113b",
    )  # fmt: skip
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    response = digest_response(
        algorithm, "Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "auth", "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )  # fmt: skip
    assert response == expected


def test_md5_without_qop_is_rfc2069_style() -> None:
    # H(H(A1):nonce:H(A2)) with A1 = user:realm:pass, A2 = method:uri
    import hashlib

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    expected = h(f"{h('bob:r:pw')}:n:{h('INVITE:sip:x@y')}")
    assert digest_response("MD5", "bob", "r", "pw", "INVITE", "sip:x@y", "n") == expected


def test_md5_sess_hashes_nonce_and_cnonce_into_ha1() -> None:
    import hashlib

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = h(f"{h('bob:r:pw')}:n:c")
    expected = h(f"{ha1}:n:00000001:c:auth:{h('REGISTER:sip:r')}")
    assert (
        digest_response("MD5-sess", "bob", "r", "pw", "REGISTER", "sip:r", "n", "auth", "00000001", "c")
        == expected
    )


def test_challenge_parsing_handles_quoted_commas_and_qop_lists() -> None:
    c = parse_challenge(
        'Digest realm="a, b", nonce="xyz", qop="auth,auth-int", algorithm=SHA-256, stale=TRUE, opaque="o"'
    )
    assert (c.realm, c.nonce, c.qop, c.algorithm, c.stale, c.opaque) == (
        "a, b", "xyz", ("auth", "auth-int"), "SHA-256", True, "o",
    )  # fmt: skip
    with pytest.raises(SipParseError):
        parse_challenge('Basic realm="x"')
    with pytest.raises(SipParseError):
        parse_challenge('Digest realm="x"')


def test_client_counts_nonce_uses_and_picks_realm_credentials() -> None:
    client = DigestClient([Credentials("a", "1", realm="one"), Credentials("b", "2")])
    ch = Challenge(realm="one", nonce="n", qop=("auth",))
    first = client.authorization(ch, "INVITE", "sip:x@y", cnonce="c")
    second = client.authorization(ch, "INVITE", "sip:x@y", cnonce="c")
    assert first is not None and 'username="a"' in first and "nc=00000001" in first
    assert second is not None and "nc=00000002" in second
    other = client.authorization(Challenge(realm="two", nonce="m"), "BYE", "sip:x@y")
    assert other is not None and 'username="b"' in other and "qop" not in other
    assert (
        DigestClient([Credentials("a", "1", realm="one")]).authorization(Challenge("zzz", "n"), "X", "u")
        is None
    )
    assert client.authorization(Challenge("one", "n", algorithm="SHA-1"), "X", "u") is None


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess"])
def test_server_verifies_what_the_client_computes(algorithm: str) -> None:
    now = [1000.0]
    server = DigestServer("telebridge", {"trunk": "pw"}.get, algorithm=algorithm, clock=lambda: now[0])
    client = DigestClient([Credentials("trunk", "pw")])
    challenge = parse_challenge(server.challenge())
    auth = client.authorization(challenge, "INVITE", "sip:bridge@127.0.0.1")
    assert auth is not None
    assert server.verify(auth, "INVITE") == (True, False)
    assert server.verify(auth, "BYE") == (False, False)  # method is part of A2
    wrong = DigestClient([Credentials("trunk", "nope")]).authorization(
        challenge, "INVITE", "sip:bridge@127.0.0.1"
    )
    assert wrong is not None and server.verify(wrong, "INVITE") == (False, False)
    now[0] += 1000
    assert server.verify(auth, "INVITE") == (False, True)  # stale nonce → new challenge with stale=true
    assert "stale=true" in server.challenge(stale=True)


def test_server_rejects_forged_nonces_and_garbage() -> None:
    server = DigestServer("telebridge", {"trunk": "pw"}.get)
    forged = DigestClient([Credentials("trunk", "pw")]).authorization(
        Challenge("telebridge", "64.deadbeef", qop=("auth",)), "INVITE", "sip:x@y"
    )
    assert forged is not None and server.verify(forged, "INVITE") == (False, False)
    for junk in ("", "Digest", 'Digest realm="telebridge", nonce=', "Basic abc", 'Digest nonce="zz.1"'):
        assert server.verify(junk, "INVITE")[0] is False


def test_allow_list_matches_networks_and_rejects_names() -> None:
    allow = AllowList(["127.0.0.0/8", "2001:db8::/32", "192.0.2.10"])
    assert allow.allows("127.0.0.1") and allow.allows("2001:db8::1") and allow.allows("[2001:db8::1]")
    assert allow.allows("192.0.2.10") and not allow.allows("192.0.2.11")
    assert not allow.allows("trunk.example.com")
    assert AllowList().allows("198.51.100.1")
