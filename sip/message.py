"""SIP messages (RFC 3261 §7) and their wire form (§25): parsing, framing and serialising.

:func:`parse_message` turns one datagram (or one framed stream message) into a :class:`Request` or a
:class:`Response`; :class:`StreamFramer` cuts a TCP/TLS byte stream at Content-Length boundaries (§18.3).
Every deviation from the grammar raises :class:`~sip.errors.SipParseError` and nothing else.

Header values are kept as the unfolded text that arrived, in order, under the name as written: unknown
headers pass through verbatim. The headers the stack reasons about (Via, From, To, Call-ID, CSeq,
Contact, Content-Length, Max-Forwards) are parsed and validated at parse time, so later accessors on a
received message cannot fail. Bodies (SDP included) are opaque bytes with a Content-Type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sip.errors import SipParseError
from sip.headers import (
    CANONICAL_NAMES,
    LIST_HEADERS,
    SINGLE_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    check_token,
    is_token,
    key_of,
    parse_int,
    split_list,
)
from sip.uri import Uri, parse_uri

#: Defaults for size limits (bytes). A SIP message over UDP must fit a datagram (§18.1.1); carriers'
#: INVITEs with SDP are a few kB. Larger limits are configurable per transport.
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_HEADERS = 200

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class Headers:
    """Ordered multi-map of header fields: ``(key, name as written, value)`` triples.

    Lookups are by the lower-case canonical name (``key_of``), so compact forms and any capitalisation
    coincide. A message has a dozen headers; a linear scan beats a dict of lists here.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [(key_of(n), n, v) for n, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = key_of(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``, repeated lines and (for list headers) comma lists flattened (§7.3.1)."""
        key = key_of(name)
        values = [v for k, _, v in self._items if k == key]
        if key in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                out.extend(split_list(v))
            return out
        return values

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = key_of(name)
        return any(k == key for k, _, _ in self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((key_of(name), name, value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (key_of(name), name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one line at the first one's position (or at the end)."""
        key = key_of(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, name, value)
                self._items[i + 1 :] = [t for t in self._items[i + 1 :] if t[0] != key]
                return
        self._items.append((key, name, value))

    def replace_all(self, name: str, values: list[str]) -> None:
        """Put ``values`` as one line each where the first ``name`` line was (e.g. a rewritten Via)."""
        key = key_of(name)
        first = next((i for i, t in enumerate(self._items) if t[0] == key), len(self._items))
        rest = [t for t in self._items if t[0] != key]
        first = min(first, len(rest))
        self._items = rest[:first] + [(key, name, v) for v in values] + rest[first:]

    def remove(self, name: str) -> None:
        key = key_of(name)
        self._items = [t for t in self._items if t[0] != key]

    def items(self) -> Iterator[tuple[str, str]]:
        for _, n, v in self._items:
            yield n, v

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


class Message:
    """What requests and responses share: headers, an opaque body, and parsed views of key headers."""

    __slots__ = ("_call_id", "_cseq", "_from", "_to", "_via", "body", "headers")

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.headers: Headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body
        self._via: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: CSeq | None = None
        self._call_id: str | None = None

    def invalidate(self) -> None:
        """Forget parsed views after editing headers of a message already read."""
        self._via = self._from = self._to = self._cseq = self._call_id = None

    # Parsed views. On a received message they were validated by parse_message and cannot raise.
    @property
    def via(self) -> list[Via]:
        if self._via is None:
            self._via = [Via.parse(v) for v in self.headers.get_all("Via")]
        return self._via

    @property
    def top_via(self) -> Via:
        vias = self.via
        if not vias:
            raise SipParseError("missing Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = NameAddr.parse(self._required("From"))
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = NameAddr.parse(self._required("To"))
        return self._to

    @property
    def call_id(self) -> str:
        if self._call_id is None:
            self._call_id = self._required("Call-ID")
        return self._call_id

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = CSeq.parse(self._required("CSeq"))
        return self._cseq

    @property
    def contact(self) -> list[NameAddr]:
        return [NameAddr.parse(c) for c in self.headers.get_all("Contact") if c.strip() != "*"]

    @property
    def content_type(self) -> str | None:
        ct = self.headers.get("Content-Type")
        return ct.split(";", 1)[0].strip().lower() if ct else None

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return value

    def start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        """Serialise (§7): start line, headers in order, Content-Length always equal to the body length."""
        lines = [self.start_line()]
        for key, name, value in self.headers._items:
            if key != "content-length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.encode()


class Request(Message):
    """A SIP request (§7.1). ``uri`` is the Request-URI text; :attr:`request_uri` parses it."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str | Uri,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = str(uri)

    @property
    def request_uri(self) -> Uri:
        return parse_uri(self.uri)

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response (§7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _split_head(data: bytes, max_header_bytes: int) -> tuple[str, int]:
    """Find the empty line ending the header block; return (decoded head, body offset)."""
    end = data.find(b"\r\n\r\n")
    if end != -1:
        body_at = end + 4
    else:
        end = data.find(b"\n\n")
        if end == -1:
            if len(data) > max_header_bytes:
                raise SipParseError("header block too large", 413)
            raise SipParseError("no empty line after headers")
        body_at = end + 2
    if end > max_header_bytes:
        raise SipParseError("header block too large", 413)
    # surrogateescape keeps non-UTF-8 bytes (a Latin-1 display name from an old PBX) verbatim.
    return data[:end].decode("utf-8", "surrogateescape"), body_at


def _parse_header_lines(lines: list[str]) -> Headers:
    """Unfold (§7.3.1: a line starting with SP/HT continues the previous one) and split name:value."""
    headers = Headers()
    items = headers._items
    canon = CANONICAL_NAMES
    for line in lines:
        if not line:
            raise SipParseError("empty header line")
        if line[0] in " \t":
            if not items:
                raise SipParseError("continuation line before first header")
            k, n, v = items[-1]
            items[-1] = (k, n, (v + " " + line.strip()) if v else line.strip())
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError("header line without colon")
        name = line[:colon]
        if name[-1] in " \t":
            name = name.rstrip(" \t")
        if not is_token(name):
            raise SipParseError("invalid header name")
        lname = name.lower()
        full = canon.get(lname)
        items.append((full.lower() if full is not None else lname, name, line[colon + 1 :].strip()))
        if len(items) > MAX_HEADERS:
            raise SipParseError("too many headers", 413)
    return headers


def _parse_start_line(line: str) -> Request | Response:
    if line.startswith("SIP/") or line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("malformed status line")
        if parts[0].upper() != SIP_VERSION:
            raise SipParseError("unsupported SIP version", 505)
        code = parts[1]
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            raise SipParseError("invalid status code")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError("status code out of range")
        return Response(status, parts[2] if len(parts) == 3 else "")
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("malformed request line")
    method, uri, version = parts
    check_token(method, "method")
    if not uri:
        raise SipParseError("empty Request-URI")
    if version.upper() != SIP_VERSION:
        if version[:4].upper() == "SIP/":
            raise SipParseError("unsupported SIP version", 505)
        raise SipParseError("malformed request line")
    return Request(method, uri)


_MANDATORY = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))


def _validate(msg: Request | Response) -> None:
    """Check and cache the headers the stack relies on (§8.1.1 mandatory headers, §20)."""
    h = msg.headers
    seen: set[str] = set()
    for key, _, value in h._items:
        if key in SINGLE_HEADERS:
            if key in seen:
                raise SipParseError(f"repeated {canonical_name(key)} header")
            seen.add(key)
            if "," in value and key in ("cseq", "max-forwards", "content-length", "call-id"):
                raise SipParseError(f"multiple values in {canonical_name(key)}")
    present = {k for k, _, _ in h._items}
    for key, name in _MANDATORY:
        if key not in present:
            raise SipParseError(f"missing {name}")
    vias = msg.via
    if not vias:
        raise SipParseError("missing Via")
    for via in vias:
        if via.protocol.upper() != SIP_VERSION:
            raise SipParseError("unsupported Via protocol")
    msg.from_  # noqa: B018 - parse for validation
    msg.to  # noqa: B018
    call_id = msg.call_id
    if not call_id or " " in call_id or "\t" in call_id:
        raise SipParseError("invalid Call-ID")
    cseq = msg.cseq
    if isinstance(msg, Request) and cseq.method != msg.method:
        raise SipParseError("CSeq method does not match request method")
    mf = h.get("Max-Forwards")
    if mf is not None:
        parse_int(mf, "Max-Forwards", 255)
    expires = h.get("Expires")
    if expires is not None:
        parse_int(expires, "Expires")
    for contact in h.get_all("Contact"):
        if contact != "*":
            NameAddr.parse(contact)
    if isinstance(msg, Request):
        parse_uri(msg.uri)


def parse_message(
    data: bytes,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Request | Response:
    """Parse one complete message (a UDP datagram or a framed stream message).

    Leading CRLFs are ignored (§7.5). Without Content-Length the body is the rest of the datagram; with
    it, extra bytes are dropped and a short body is an error (§18.3).
    """
    start = 0
    n = len(data)
    while start < n and data[start] in (13, 10):
        start += 1
    if start:
        data = data[start:]
    if not data:
        raise SipParseError("empty message")
    head, body_at = _split_head(data, max_header_bytes)
    lines = head.split("\r\n") if "\r\n" in head else head.split("\n")
    if "\r" in head and "\r\n" not in head:
        raise SipParseError("bare CR line ending")
    msg = _parse_start_line(lines[0])
    try:
        msg.headers = _parse_header_lines(lines[1:])
    except SipParseError:
        raise
    body = data[body_at:]
    cl_text = msg.headers.get("Content-Length")
    try:
        if cl_text is not None:
            length = parse_int(cl_text, "Content-Length")
            if length > max_body_bytes:
                raise SipParseError("body too large", 413)
            if length > len(body):
                raise SipParseError("body shorter than Content-Length")
            body = body[:length]
        elif len(body) > max_body_bytes:
            raise SipParseError("body too large", 413)
        msg.body = body
        _validate(msg)
    except SipParseError as exc:
        if isinstance(msg, Request) and exc.partial is None:
            exc.partial = msg
        raise
    return msg


class StreamFramer:
    """Cut a TCP/TLS byte stream into messages by Content-Length (§18.3), which is mandatory there.

    Feed bytes with :meth:`feed`; take complete messages (as bytes, to hand to :func:`parse_message`)
    from :meth:`messages`. CRLF keepalives between messages (RFC 5626 §3.5.1) are skipped and counted in
    ``keepalives`` so the edge can answer a double-CRLF ping. A stream whose framing is broken cannot be
    resynchronised: :class:`SipParseError` is raised and the connection must be closed.
    """

    __slots__ = ("_buf", "_scanned", "keepalives", "max_body_bytes", "max_header_bytes")

    def __init__(
        self, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._buf = bytearray()
        #: how far the buffer is known not to contain the end of a header block (no quadratic rescans
        #: when a peer dribbles a header in tiny segments)
        self._scanned = 0
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.keepalives = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def messages(self) -> Iterator[bytes]:
        buf = self._buf
        while True:
            skip = 0
            while skip < len(buf) and buf[skip] in (13, 10):
                skip += 1
            if skip:
                if buf[:skip].count(b"\r\n\r\n") or skip >= 4:
                    self.keepalives += 1
                del buf[:skip]
                self._scanned = 0
            if not buf:
                return
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end == -1:
                self._scanned = len(buf)
                if len(buf) > self.max_header_bytes:
                    raise SipParseError("header block too large", 413)
                return
            if end > self.max_header_bytes:
                raise SipParseError("header block too large", 413)
            length = self._content_length(bytes(buf[:end]))
            if length > self.max_body_bytes:
                raise SipParseError("body too large", 413)
            total = end + 4 + length
            if len(buf) < total:
                return
            chunk = bytes(buf[:total])
            del buf[:total]
            self._scanned = 0
            yield chunk

    @staticmethod
    def _content_length(head: bytes) -> int:
        value: str | None = None
        for line in head.split(b"\r\n")[1:]:
            if not line or line[0] in (32, 9):
                continue
            name, sep, rest = line.partition(b":")
            if not sep:
                continue
            lname = name.strip().lower()
            if lname in (b"content-length", b"l"):
                if value is not None:
                    raise SipParseError("repeated Content-Length")
                value = rest.decode("ascii", "replace")
        if value is None:
            raise SipParseError("missing Content-Length on a stream transport")
        return parse_int(value, "Content-Length")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` (§8.2.6.2): Via (all, in order), From, To (+tag), Call-ID and
    CSeq copied; Record-Route copied too for dialog-creating responses (§12.1.1).

    Header lines are copied as (key, name, value) triples, so no name is looked up again (hot path).
    """
    src = request.headers._items
    vias: list[tuple[str, str, str]] = []
    record_routes: list[tuple[str, str, str]] = []
    from_ = to = call_id = cseq = timestamp = None
    for item in src:
        key = item[0]
        if key == "via":
            vias.append(item)
        elif key == "from":
            from_ = item
        elif key == "to":
            to = item
        elif key == "call-id":
            call_id = item
        elif key == "cseq":
            cseq = item
        elif key == "record-route":
            record_routes.append(item)
        elif key == "timestamp":
            timestamp = item
    items = vias
    if from_ is not None:
        items.append(from_)
    if to is not None:
        value = to[2]
        if to_tag is not None and status != 100 and ";tag=" not in value.lower().replace(" ", ""):
            to = (to[0], to[1], f"{value};tag={to_tag}")
        items.append(to)
    if call_id is not None:
        items.append(call_id)
    if cseq is not None:
        items.append(cseq)
    if 100 < status < 300 and request.method in ("INVITE", "SUBSCRIBE"):
        items.extend(record_routes)
    if status == 100 and timestamp is not None:
        items.append(timestamp)
    headers = Headers()
    headers._items = items
    for name, value in extra:
        headers.add(name, value)
    return Response(status, reason, headers, body)
