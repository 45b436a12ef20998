"""Property tests: whatever bytes arrive, the parser returns a message or raises SipParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.headers import NameAddr, Via
from sip.message import StreamFramer, parse_message
from sip.uri import parse_uri

SEED = (
    b"INVITE sip:bob@biloxi.example.com;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/TCP p.example.com;branch=z9hG4bK2,SIP/2.0/UDP q:0099\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'f: "Al\\"ice" <sip:%61lice@atlanta.example.com>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 0314159 INVITE\r\n"
    b"m: <sip:alice@pc33.atlanta.example.com>;expires=30, sip:x@y;q=0.1\r\n"
    b"X-Folded: a\r\n b\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n\r\nv=0\r\n"
)
ALPHABET = [*b' \t\r\n:;,<>"\\%@=/[]?&.0123456789abcSIPVvftim-_', 0, 0xFF, 0xC3]


def _check(data: bytes) -> None:
    try:
        m = parse_message(data)
    except SipParseError as exc:
        assert exc.reason
        return
    # A parsed message's views never raise, and its serialisation parses again.
    _ = (m.via, m.from_, m.to, m.cseq, m.call_id, m.contact)
    parse_message(m.encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SEED)), st.integers(0, 8), st.lists(st.sampled_from(ALPHABET), max_size=6)
        ),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_valid_messages_only_raise_parse_error(edits: list[tuple[int, int, list[int]]]) -> None:
    data = bytearray(SEED)
    for pos, delete, insert in edits:
        pos = min(pos, len(data))
        data[pos : pos + delete] = bytes(insert)
    _check(bytes(data))


@settings(max_examples=800, deadline=None)
@given(
    st.lists(
        st.sampled_from([chr(c) for c in ALPHABET] + ["é", "<", "sip:", "tag", "SIP/2.0/"]), max_size=30
    ).map("".join)
)
def test_header_value_parsers_only_raise_parse_error(text: str) -> None:
    for parser in (NameAddr.parse, Via.parse, parse_uri):
        try:
            parser(text)
        except SipParseError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_stream_framer_only_raises_parse_error(data: bytes, step: int) -> None:
    framer = StreamFramer(max_header_bytes=200, max_body_bytes=200)
    try:
        for i in range(0, len(data), step):
            framer.feed(data[i : i + step])
            for chunk in framer.messages():
                _check(chunk)
    except SipParseError:
        pass


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["sip:", "SIPS:", "user", "@", "host.example", ":", "5060", "99999", ";", "lr", "=", "x",
                         "%41", "?", "&", "[2001:db8::1]", "@", ";", "tag", "-", "."]),
        max_size=12,
    ).map("".join)
)  # fmt: skip
def test_uri_fast_path_agrees_with_the_general_parser(text: str) -> None:
    from sip.uri import SipUri

    try:
        general: SipUri | None = SipUri._parse_general(text)
    except SipParseError:
        general = None
    try:
        fast: SipUri | None = SipUri.parse(text)
    except SipParseError:
        fast = None
    if general is None:
        assert fast is None, text
    else:
        assert fast is not None
        assert (fast.scheme, fast.user, fast.password, fast.host, fast.port, fast.params, fast.headers) == (
            general.scheme, general.user, general.password, general.host, general.port, general.params,
            general.headers,
        ), text  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=5), st.lists(st.integers(1, 97), min_size=1, max_size=40)
)
def test_stream_framing_does_not_depend_on_segmentation(bodies: list[int], cuts: list[int]) -> None:
    messages = [SEED.replace(b"l: 4\r\n\r\nv=0\r\n", f"l: {n}\r\n\r\n".encode() + b"x" * n) for n in bodies]
    data = b"\r\n".join(messages)
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        if pos >= len(data):
            break
        framer.feed(data[pos : pos + cut])
        pos += cut
        out.extend(framer.messages())
    assert out == messages
