"""Parser and serialiser against a corpus written from the RFC 3261 §25 grammar, with scenarios in the
spirit of the RFC 4475 torture tests (the messages are our own)."""

from __future__ import annotations

import pytest

from sip.errors import SipParseError
from sip.headers import NameAddr, Via, split_list
from sip.message import Request, Response, StreamFramer, make_response, parse_message
from sip.uri import AbsoluteUri, SipUri

CRLF = "\r\n"


def msg(*lines: str, body: str = "") -> bytes:
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


BASIC = [
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.example.com>",
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
]


def basic(*replace: tuple[str, str | None], extra: tuple[str, ...] = (), body: str = "") -> bytes:
    lines = list(BASIC)
    for prefix, new in replace:
        idx = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        if new is None:
            del lines[idx]
        else:
            lines[idx] = new
    lines.extend(extra)
    if body:
        lines.append(f"Content-Length: {len(body.encode())}")
    return msg(*lines, body=body)


def test_basic_invite_parses_all_mandatory_headers() -> None:
    m = parse_message(basic())
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == "sip:bob@biloxi.example.com"
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert m.top_via.transport == "UDP"
    assert m.top_via.port is None
    assert m.from_.tag == "1928301774"
    assert m.from_.display == "Alice"
    assert m.to.tag is None
    assert m.to.display == "Bob"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == (314159, "INVITE")
    assert m.body == b""


def test_folded_headers_compact_forms_and_odd_whitespace_are_understood() -> None:
    raw = (
        b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
        b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
        b'from   : "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
        b"MaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nContent-Length   : 5\r\n"
        b"cseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\ns :\r\n"
        b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
        b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\nc: application/sdp\r\n"
        b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
        b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
        b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
        b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n'
        b"  secondparam ; q = 0.33\r\n\r\nhello"
    )
    m = parse_message(raw)
    assert isinstance(m, Request)
    assert [v.host for v in m.via] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.transport for v in m.via] == ["UDP", "TCP", "UDP"]
    assert m.via[2].branch == "z9hG4bK30239"
    assert m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.cseq == (9, "INVITE")
    assert m.headers.get("Max-Forwards") == "0068"
    assert m.headers.get("Subject") == ""
    assert m.content_type == "application/sdp"
    assert m.headers.get("NEWFANGLEDHEADER") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = m.contact[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    route = NameAddr.parse(m.headers.get_all("Route")[0])
    assert isinstance(route.uri, SipUri)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert m.body == b"hello"


def test_serialised_message_reparses_to_the_same_fields() -> None:
    m = parse_message(basic(body="v=0\r\n"))
    again = parse_message(m.encode())
    assert isinstance(again, Request)
    assert again.body == b"v=0\r\n"
    assert list(again.headers.items()) == list(m.headers.items())


def test_unknown_headers_are_kept_verbatim_in_order() -> None:
    m = parse_message(basic(extra=('X-Carrier-Thing: a,b;;c="d, e"', "P-Odd: ~~  two  spaces")))
    out = m.encode().decode()
    assert 'X-Carrier-Thing: a,b;;c="d, e"\r\nP-Odd: ~~  two  spaces\r\n' in out


def test_repeated_and_comma_separated_list_headers_are_equivalent() -> None:
    m = parse_message(
        basic(
            extra=(
                "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
                "Route: <sip:p3.example.com;lr>",
            )
        )
    )
    assert [str(NameAddr.parse(r).uri) for r in m.headers.get_all("Route")] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]


def test_comma_inside_quoted_display_name_does_not_split_contact() -> None:
    m = parse_message(basic(("Contact", 'Contact: "Doe, John" <sip:j@a.example.com>, <sip:k@b.example.com>')))
    assert [c.display for c in m.contact] == ["Doe, John", None]


def test_authorization_header_with_commas_is_not_split() -> None:
    m = parse_message(basic(extra=('Authorization: Digest username="a", realm="b", nonce="c,d"',)))
    assert len(m.headers.get_all("Authorization")) == 1


def test_addr_spec_params_belong_to_the_header_not_the_uri() -> None:
    na = NameAddr.parse("sip:alice@example.com;tag=abc")
    assert na.tag == "abc"
    assert isinstance(na.uri, SipUri) and na.uri.params == {}
    na2 = NameAddr.parse("<sip:alice@example.com;transport=tcp>;tag=abc")
    assert isinstance(na2.uri, SipUri) and na2.uri.transport == "tcp"
    assert na2.tag == "abc"


def test_display_name_tokens_without_quotes() -> None:
    na = NameAddr.parse("Bob  Smith <sip:bob@example.com>")
    assert na.display == "Bob  Smith"


def test_tel_uri_in_to_and_request_uri() -> None:
    m = parse_message(
        basic(
            ("INVITE", "INVITE tel:+15551234567;phone-context=+1 SIP/2.0"),
            ("To:", "To: <tel:+15551234567>"),
        )
    )
    assert isinstance(m, Request)
    assert isinstance(m.request_uri, AbsoluteUri)
    assert isinstance(m.to.uri, AbsoluteUri) and m.to.uri.scheme == "tel"


def test_ipv6_references_in_uri_and_via() -> None:
    m = parse_message(
        basic(
            ("INVITE", "INVITE sip:[2001:db8::10]:5070;transport=udp SIP/2.0"),
            ("Via", "Via: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;received=2001:db8::9:255"),
        )
    )
    assert isinstance(m, Request)
    uri = m.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port, uri.host_address) == ("[2001:db8::10]", 5070, "2001:db8::10")
    assert m.top_via.host == "[2001:db8::9:1]" and m.top_via.port == 6050
    assert m.top_via.params["received"] == "2001:db8::9:255"


def test_escaped_user_and_uri_comparison_decodes_escapes() -> None:
    a = SipUri.parse("sip:%61lice@ATLANTA.example.com;transport=TCP")
    b = SipUri.parse("sip:alice@atlanta.example.com;transport=tcp")
    assert a == b
    assert str(a) == "sip:%61lice@ATLANTA.example.com;transport=TCP"
    assert SipUri.parse("sip:alice@a.example.com") != SipUri.parse("sip:alice@a.example.com:5060")


def test_user_part_may_contain_semicolon_and_question_mark() -> None:
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    uri2 = SipUri.parse("sip:alice:secret@host.example.com:0005060;lr;maddr=10.0.0.1?subject=hi&x=y")
    assert (uri2.password, uri2.port, uri2.headers) == ("secret", 5060, "subject=hi&x=y")
    assert uri2.params == {"lr": None, "maddr": "10.0.0.1"}


def test_leading_zeros_in_numbers() -> None:
    m = parse_message(basic(("CSeq", "CSeq: 00000314159 INVITE"), extra=("Expires: 0030",)))
    assert m.cseq.number == 314159
    resp = parse_message(msg("SIP/2.0 200 OK", *BASIC[1:], "Content-Length: 0000000"))
    assert isinstance(resp, Response) and resp.body == b""


def test_response_with_reason_phrase_containing_spaces_and_utf8() -> None:
    r = parse_message(msg("SIP/2.0 486 Busy Here — try later", *BASIC[1:]))
    assert isinstance(r, Response)
    assert (r.status, r.reason) == (486, "Busy Here — try later")


def test_empty_reason_phrase_is_allowed() -> None:
    r = parse_message(msg("SIP/2.0 200 ", *BASIC[1:]))
    assert isinstance(r, Response) and r.reason == ""


def test_leading_crlfs_before_start_line_are_ignored() -> None:
    m = parse_message(b"\r\n\r\n" + basic())
    assert isinstance(m, Request)


def test_bare_lf_line_endings_are_tolerated() -> None:
    m = parse_message(basic().replace(b"\r\n", b"\n"))
    assert isinstance(m, Request) and m.cseq.number == 314159


def test_udp_body_longer_than_content_length_is_truncated() -> None:
    raw = msg(*BASIC, "Content-Length: 3", body="abcdef")
    assert parse_message(raw).body == b"abc"


def test_udp_body_without_content_length_is_the_rest_of_the_datagram() -> None:
    assert parse_message(msg(*BASIC, body="abcdef")).body == b"abcdef"


def test_unknown_method_parses_and_matching_cseq_is_required() -> None:
    m = parse_message(
        basic(("INVITE", "NEWMETHOD sip:bob@b.example.com SIP/2.0"), ("CSeq", "CSeq: 1 NEWMETHOD"))
    )
    assert isinstance(m, Request) and m.method == "NEWMETHOD"


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    raw = basic(("From", 'From: "M\xfcller" <sip:m@a.example.com>;tag=1'))
    raw = raw.replace("M\xfcller".encode(), b"M\xfcller")
    m = parse_message(raw)
    assert b"M\xfcller" in m.encode()


def test_wildcard_contact_is_accepted() -> None:
    m = parse_message(
        basic(
            ("INVITE", "REGISTER sip:example.com SIP/2.0"),
            ("CSeq", "CSeq: 2 REGISTER"),
            ("Contact", "Contact: *"),
        )
    )
    assert m.contact == []


INVALID: list[tuple[str, bytes, str]] = [
    ("no empty line", b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1", "empty line"),
    ("missing Call-ID", basic(("Call-ID", None)), "Call-ID"),
    ("missing CSeq", basic(("CSeq", None)), "CSeq"),
    ("missing From", basic(("From", None)), "From"),
    ("missing To", basic(("To:", None)), "To"),
    ("missing Via", basic(("Via", None)), "Via"),
    ("two From headers", basic(extra=("From: <sip:x@y>;tag=2",)), "repeated From"),
    ("two Content-Length", msg(*BASIC, "Content-Length: 0", "l: 0"), "repeated Content-Length"),
    ("comma in CSeq", basic(("CSeq", "CSeq: 1 INVITE, 2 INVITE")), "CSeq"),
    ("CSeq method mismatch", basic(("CSeq", "CSeq: 1 BYE")), "CSeq method"),
    ("negative CSeq", basic(("CSeq", "CSeq: -1 INVITE")), "CSeq"),
    ("CSeq too big", basic(("CSeq", "CSeq: 36893488147419103232 INVITE")), "out of range"),
    ("Max-Forwards too big", basic(("Max-Forwards", "Max-Forwards: 300")), "Max-Forwards"),
    ("Content-Length not a number", msg(*BASIC, "Content-Length: abc"), "Content-Length"),
    ("Content-Length negative", msg(*BASIC, "Content-Length: -5"), "Content-Length"),
    ("Content-Length larger than body", msg(*BASIC, "Content-Length: 900", body="short"), "shorter"),
    ("Content-Length huge", msg(*BASIC, "Content-Length: 99999999999999999999"), "range"),
    ("SIP/7.0 request", basic(("INVITE", "INVITE sip:a@b.example.com SIP/7.0")), "version"),
    ("SIP/7.0 response", msg("SIP/7.0 200 OK", *BASIC[1:]), "version"),
    (
        "extra spaces in request line",
        basic(("INVITE", "INVITE  sip:a@b.example.com SIP/2.0")),
        "request line",
    ),
    ("spaces in Request-URI", basic(("INVITE", "INVITE sip:a b@c.example.com SIP/2.0")), "request line"),
    ("escaped headers in Request-URI line", basic(("INVITE", "INVITE sip:a@b SIP/2.0 junk")), "request line"),
    ("bad method token", basic(("INVITE", "INV<TE sip:a@b.example.com SIP/2.0")), "method"),
    ("status code with 4 digits", msg("SIP/2.0 2000 OK", *BASIC[1:]), "status"),
    ("status code 099", msg("SIP/2.0 099 Weird", *BASIC[1:]), "status"),
    ("status code 700", msg("SIP/2.0 700 Weird", *BASIC[1:]), "status"),
    ("unterminated quoted display", basic(("From", 'From: "Alice <sip:a@b.example.com>;tag=1')), "quoted"),
    ("unterminated angle bracket", basic(("To:", "To: <sip:bob@biloxi.example.com")), "unterminated"),
    ("whitespace inside brackets", basic(("To:", "To: < sip:bob@biloxi.example.com >")), "whitespace"),
    ("space in addr-spec", basic(("To:", "To: sip:bob @biloxi.example.com")), "addr-spec"),
    ("bad escape in user", basic(("To:", "To: <sip:bob%zz@biloxi.example.com>")), "escape"),
    ("IPv6 without brackets", basic(("INVITE", "INVITE sip:user@2001:db8::10 SIP/2.0")), "port"),
    ("bad IPv6 reference", basic(("INVITE", "INVITE sip:user@[2001:db8:::10] SIP/2.0")), "IPv6"),
    ("port too big", basic(("INVITE", "INVITE sip:user@host.example.com:65536 SIP/2.0")), "port"),
    ("Via without sent-by", basic(("Via", "Via: SIP/2.0/UDP ;branch=z9hG4bK1")), "sent-by"),
    ("Via bad protocol", basic(("Via", "Via: SIP/2.0 pc33.example.com;branch=z9hG4bK1")), "sent-protocol"),
    ("Via bad version", basic(("Via", "Via: SIP/3.0/UDP pc33.example.com;branch=z9hG4bK1")), "Via protocol"),
    ("Via empty branch", basic(("Via", "Via: SIP/2.0/UDP pc33.example.com;branch=")), "Via"),
    ("header without colon", basic(extra=("NotAHeader",)), "colon"),
    ("header name with space", basic(extra=("Bad Name: x",)), "header name"),
    ("continuation first", b"INVITE sip:a@b.example.com SIP/2.0\r\n  folded\r\n\r\n", "continuation"),
    ("Call-ID with space", basic(("Call-ID", "Call-ID: a b")), "Call-ID"),
    ("unknown scheme char", basic(("INVITE", "INVITE s!p:a@b.example.com SIP/2.0")), "scheme"),
    ("Expires not a number", basic(extra=("Expires: soon",)), "Expires"),
    ("empty message", b"\r\n\r\n", "empty"),
    ("garbage", b"\x00\x01\x02\r\n\r\n", "request line"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(r, why) for _, r, why in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_malformed_message_raises_parse_error_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(raw)
    assert reason.lower() in info.value.reason.lower()


def test_malformed_request_keeps_partial_request_for_a_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(basic(("Max-Forwards", "Max-Forwards: 999")))
    partial = info.value.partial
    assert partial is not None and partial.method == "INVITE"
    resp = make_response(partial, 400, info.value.reason)
    assert resp.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert resp.reason == info.value.reason


def test_unsupported_version_maps_to_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(basic(("INVITE", "INVITE sip:a@b.example.com SIP/7.0")))
    assert info.value.status == 505


def test_oversized_header_block_and_body_are_rejected_with_413() -> None:
    big = basic(extra=("X-Big: " + "a" * 20000,))
    with pytest.raises(SipParseError) as info:
        parse_message(big)
    assert info.value.status == 413
    with pytest.raises(SipParseError) as info2:
        parse_message(msg(*BASIC, "Content-Length: 10", body="0123456789"), max_body_bytes=5)
    assert info2.value.status == 413


def test_stream_framer_splits_pipelined_messages_by_content_length() -> None:
    one = msg(*BASIC, "Content-Length: 4", body="abcd")
    two = msg(*BASIC, "l: 0")
    framer = StreamFramer()
    data = b"\r\n\r\n" + one + two
    out: list[bytes] = []
    for i in range(0, len(data), 7):
        framer.feed(data[i : i + 7])
        out.extend(framer.messages())
    assert out == [one, two]
    assert framer.keepalives == 1
    assert parse_message(out[0]).body == b"abcd"


def test_stream_framer_requires_content_length() -> None:
    framer = StreamFramer()
    framer.feed(msg(*BASIC))
    with pytest.raises(SipParseError):
        list(framer.messages())


def test_stream_framer_limits_header_size_without_terminator() -> None:
    framer = StreamFramer(max_header_bytes=100)
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 200)
    with pytest.raises(SipParseError):
        list(framer.messages())


def test_make_response_copies_headers_and_adds_to_tag() -> None:
    req = parse_message(basic(extra=("Record-Route: <sip:p1.example.com;lr>",)))
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="xyz")
    again = parse_message(resp.encode())
    assert isinstance(again, Response)
    assert again.to.tag == "xyz"
    assert again.headers.get_all("Record-Route") == ["<sip:p1.example.com;lr>"]
    assert again.cseq == req.cseq
    trying = make_response(req, 100, to_tag="xyz")
    assert trying.to.tag is None


def test_split_list_keeps_quoted_commas_and_brackets() -> None:
    assert split_list('"a,b" <sip:x@y;p=1,2>, <sip:z@w>') == ['"a,b" <sip:x@y;p=1,2>', "<sip:z@w>"]


def test_via_serialises_with_params() -> None:
    via = Via.parse("SIP/2.0/udp 10.0.0.1:05060;branch=z9hG4bKx;rport;received=10.0.0.2")
    assert via.transport == "UDP" and via.port == 5060
    assert via.params == {"branch": "z9hG4bKx", "rport": None, "received": "10.0.0.2"}
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport;received=10.0.0.2"


# Further scenarios in the spirit of RFC 4475 (messages written for this suite).


def test_method_may_be_any_token_and_cseq_must_repeat_it() -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    m = parse_message(basic(("INVITE", f"{method} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com SIP/2.0"),
                            ("CSeq", f"CSeq: 139122385 {method}")))  # fmt: skip
    assert isinstance(m, Request) and m.method == method
    uri = m.request_uri
    assert isinstance(uri, SipUri) and uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"


def test_escaped_characters_in_the_request_uri_user_part() -> None:
    m = parse_message(basic(("INVITE", "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0")))
    assert isinstance(m, Request)
    uri = m.request_uri
    assert isinstance(uri, SipUri) and uri.user == "sips%3Auser%40example.com" and uri.host == "example.net"


def test_display_name_directly_before_angle_bracket() -> None:
    m = parse_message(basic(("To:", "To: caller<sip:caller@example.com>;tag=323")))
    assert (m.to.display, m.to.tag) == ("caller", "323")


def test_two_messages_in_one_datagram_keep_only_the_first() -> None:
    first = msg(*BASIC, "Content-Length: 0")
    second = msg("INVITE sip:other@example.com SIP/2.0", *BASIC[1:], "Content-Length: 0")
    m = parse_message(first + second)
    assert isinstance(m, Request) and m.uri == "sip:bob@biloxi.example.com" and m.body == b""


def test_multipart_body_is_opaque_bytes_with_its_content_type() -> None:
    body = "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n"
    m = parse_message(basic(extra=("Content-Type: multipart/mixed;boundary=b",), body=body))
    assert m.content_type == "multipart/mixed" and m.body == body.encode()


def test_unusual_transport_tokens_in_via() -> None:
    m = parse_message(
        basic(
            (
                "Via",
                "Via: SIP/2.0/SCTP t1.example.com;branch=z9hG4bKkdjuw, SIP/2.0/TLS-SCTP t2.example.com;branch=z9hG4bK2",
            )
        )
    )
    assert [v.transport for v in m.via] == ["SCTP", "TLS-SCTP"]


def test_long_values_survive() -> None:
    long_user = "a" * 3000
    m = parse_message(basic(("To:", f"To: <sip:{long_user}@example.com>"), extra=("X-Long: " + "x" * 5000,)))
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and to_uri.user == long_user


RFC4475_STYLE_INVALID: list[tuple[str, bytes, str]] = [
    ("Request-URI in angle brackets", basic(("INVITE", "INVITE <sip:user@example.com> SIP/2.0")), ""),
    (
        "trailing space after version",
        basic(("INVITE", "INVITE sip:user@example.com SIP/2.0 ")),
        "request line",
    ),
    ("unbalanced quotes in To", basic(("To:", 'To: "Mr. J. User <sip:j.user@example.com>')), "quoted"),
    ("unescaped space in Request-URI", basic(("INVITE", "INVITE sip:user@example.com;lr; x SIP/2.0")), ""),
    ("Content-Length larger than the datagram", msg(*BASIC, "Content-Length: 9999", body="v=0"), "shorter"),
    ("negative Max-Forwards", basic(("Max-Forwards", "Max-Forwards: -1")), "Max-Forwards"),
    (
        "Via port not a number",
        basic(("Via", "Via: SIP/2.0/UDP host.example.com:50a60;branch=z9hG4bK1")),
        "port",
    ),
    ("Contact with unterminated URI", basic(("Contact", "Contact: <sip:a@b.example.com;lr")), "unterminated"),
    ("To with two URIs", basic(("To:", "To: sip:a@b.example.com sip:c@d.example.com")), ""),
    ("status line without code", msg("SIP/2.0 OK", *BASIC[1:]), "status"),
]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(r, why) for _, r, why in RFC4475_STYLE_INVALID],
    ids=[n for n, _, _ in RFC4475_STYLE_INVALID],
)
def test_rfc4475_style_invalid_messages_are_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(raw)
    assert reason.lower() in info.value.reason.lower()
