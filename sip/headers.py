"""Header field grammar of RFC 3261 §7.3 and §20/§25: names, compact forms, comma lists, parameters,
quoted strings, name-addr / addr-spec, Via and CSeq.

Header values are stored as the (unfolded) text that arrived; these functions turn the few that the
stack reasons about into small objects, and raise :class:`SipParseError` on anything off-grammar.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sip.errors import SipParseError
from sip.uri import SipUri, Uri, parse_uri, split_hostport

# §7.3.3 compact forms.
COMPACT_FORMS: dict[str, str] = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Content-Length",
    "Content-Type",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Allow",
    "Subject",
    "Content-Encoding",
    "Event",
    "Allow-Events",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
    "Min-SE",
    "Identity",
    "Expires",
    "Min-Expires",
    "User-Agent",
    "Server",
    "WWW-Authenticate",
    "Authorization",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Authentication-Info",
    "Retry-After",
    "Timestamp",
    "Date",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Disposition",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Reason",
    "RSeq",
    "RAck",
    "Path",
    "Warning",
    "Organization",
    "Priority",
    "Diversion",
]

#: lower-case name (full or compact) → canonical full name.
CANONICAL_NAMES: dict[str, str] = {n.lower(): n for n in _CANONICAL}
CANONICAL_NAMES.update({k: v for k, v in COMPACT_FORMS.items()})

#: Headers whose grammar is ``#element``: repeated lines and comma lists are equivalent (§7.3.1).
#: Authorization-family headers contain commas but are *not* lists and are deliberately absent.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow",
        "Allow-Events",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "P-Asserted-Identity",
        "Path",
        "Privacy",
        "Reason",
        "Warning",
        "Diversion",
    )
)

#: Headers that must not appear more than once (§20 / table 2: single-valued).
SINGLE_HEADERS = frozenset(
    ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type", "expires")
)

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded); unknown names as given."""
    return CANONICAL_NAMES.get(name.lower(), name)


#: key_of results for the names the stack itself asks for (a bounded set: never filled from the wire)
_KEYS: dict[str, str] = {}


def key_of(name: str) -> str:
    """Lookup key: lower-case canonical full name, so ``i``, ``CALL-ID`` and ``Call-Id`` coincide."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    lname = name.lower()
    full = CANONICAL_NAMES.get(lname)
    key = full.lower() if full is not None else lname
    if full is not None and len(_KEYS) < 1024:
        _KEYS[name] = key
    return key


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def check_token(text: str, what: str) -> str:
    if not is_token(text):
        raise SipParseError(f"invalid {what}")
    return text


def parse_int(text: str, what: str, maximum: int = 2**32 - 1) -> int:
    """``1*DIGIT`` with leading zeros allowed (§25.1), bounded so no huge numbers are built."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise SipParseError(f"invalid {what}")
    stripped = text.lstrip("0") or "0"
    if len(stripped) > 10:
        raise SipParseError(f"{what} out of range")
    value = int(stripped)
    if value > maximum:
        raise SipParseError(f"{what} out of range")
    return value


def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a ``quoted-string`` starting at ``text[pos] == '"'``; return (unescaped content, end index).

    ``quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)`` (§25.1): a backslash escapes any character but
    CR and LF.
    """
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            if nxt in "\r\n":
                raise SipParseError("bad quoted-pair")
            out.append(nxt)
            i += 2
            continue
        if ch in "\r\n":
            raise SipParseError("line break in quoted string")
        out.append(ch)
        i += 1
    raise SipParseError("unterminated quoted string")


def quote(text: str) -> str:
    """Make a quoted-string, escaping backslash and double quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str) -> list[str]:
    """Split an ``#element`` header value at top-level commas (not inside quotes or ``<...>``)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    items: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_angle = False
    while i < n:
        ch = value[i]
        if ch == '"' and not in_angle:
            _, i = read_quoted(value, i)
            continue
        if ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            item = value[start:i].strip()
            if item:
                items.append(item)
            start = i + 1
        i += 1
    if in_angle:
        raise SipParseError("unterminated <...> in list header")
    item = value[start:].strip()
    if item:
        items.append(item)
    return items


def parse_params(text: str, pos: int, what: str) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` from ``text[pos:]`` (§25.1).

    ``generic-param = token [ EQUAL gen-value ]``, ``gen-value = token / host / quoted-string``. Quoted
    values are returned with their quotes so they serialise back unchanged; names are lower-cased.
    """
    params: dict[str, str | None] = {}
    n = len(text)
    i = pos
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] != ";":
            raise SipParseError(f"unexpected {text[i]!r} in {what} parameters")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        start = i
        while i < n and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i]
        if not name:
            raise SipParseError(f"empty {what} parameter name")
        while i < n and text[i] in " \t":
            i += 1
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                _, end = read_quoted(text, i)
                value = text[i:end]
                i = end
            else:
                start = i
                while i < n and text[i] not in "; \t":
                    i += 1
                value = text[start:i]
                if not value:
                    raise SipParseError(f"empty {what} parameter value")
                for ch in value:
                    if ch not in _TOKEN_CHARS and ch not in "[]:":
                        raise SipParseError(f"invalid {what} parameter value")
        params[name.lower()] = value
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote_param(value: str | None) -> str | None:
    if value is not None and value.startswith('"'):
        return read_quoted(value, 0)[0]
    return value


class NameAddr:
    """``( name-addr / addr-spec ) *( SEMI param )`` as in From, To, Contact, Route, Record-Route,
    P-Asserted-Identity (§20.10, §25.1).

    In the addr-spec form (no angle brackets) any ``;param`` after the URI belongs to the *header*, which
    is why a URI with parameters or headers must be written with ``<...>`` (§20.10). ``display`` is the
    unescaped display name or None.
    """

    __slots__ = ("display", "params", "uri")

    def __init__(
        self, uri: Uri, display: str | None = None, params: dict[str, str | None] | None = None
    ) -> None:
        self.uri = uri
        self.display = display
        self.params: dict[str, str | None] = params if params is not None else {}

    @classmethod
    def parse(cls, text: str, allow_star: bool = False) -> NameAddr:
        text = text.strip()
        if not text:
            raise SipParseError("empty address")
        display: str | None = None
        i = 0
        n = len(text)
        if text[0] == '"':
            display, i = read_quoted(text, 0)
            while i < n and text[i] in " \t":
                i += 1
            if i >= n or text[i] != "<":
                raise SipParseError("display name without <URI>")
        lt = text.find("<", i)
        if lt != -1:
            if display is None:
                name = text[:lt].strip()
                if name:
                    for word in name.split():
                        check_token(word, "display name")
                    display = name
            gt = text.find(">", lt)
            if gt == -1:
                raise SipParseError("unterminated <URI>")
            uri_text = text[lt + 1 : gt]
            if not uri_text or uri_text != uri_text.strip():
                raise SipParseError("whitespace inside <URI>")
            uri = parse_uri(uri_text)
            params = parse_params(text, gt + 1, "address")
            return cls(uri, display, params)
        # addr-spec: the URI runs up to the first ';' after the host (a SIP user part may hold ';');
        # what follows are header parameters, not URI parameters.
        at = text.find("@")
        semi = text.find(";", at + 1 if at != -1 else 0)
        uri_text = (text if semi == -1 else text[:semi]).rstrip()
        if " " in uri_text or "\t" in uri_text or "," in uri_text or "?" in uri_text:
            raise SipParseError("addr-spec must not contain spaces, commas or '?'")
        uri = parse_uri(uri_text)
        params = parse_params(text, semi, "address") if semi != -1 else {}
        return cls(uri, None, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        head = f"{quote(self.display)} <{self.uri}>" if self.display is not None else f"<{self.uri}>"
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


class Via:
    """``via-parm = sent-protocol LWS sent-by *( SEMI via-params )`` (§20.42, §25.1).

    LWS is allowed around the slashes of sent-protocol and around the colon of sent-by.
    """

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}

    @classmethod
    def parse(cls, text: str) -> Via:
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise SipParseError("malformed Via sent-protocol")
        name = check_token(parts[0].strip(), "Via protocol name")
        version = check_token(parts[1].strip(), "Via protocol version")
        rest = parts[2].lstrip()
        i = 0
        n = len(rest)
        while i < n and rest[i] not in " \t":
            i += 1
        transport = check_token(rest[:i], "Via transport")
        while i < n and rest[i] in " \t":
            i += 1
        semi = rest.find(";", i)
        sent_by = (rest[i:] if semi == -1 else rest[i:semi]).strip()
        if not sent_by:
            raise SipParseError("missing Via sent-by")
        if sent_by.startswith("["):
            host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
        else:
            hpart, sep, ppart = sent_by.partition(":")
            host, port = split_hostport(hpart.strip() + (":" + ppart.strip() if sep else ""))
        params = parse_params(rest, semi, "Via") if semi != -1 else {}
        if "branch" in params and not params["branch"]:
            raise SipParseError("empty Via branch")
        return cls(transport.upper(), host, port, params, f"{name}/{version}")

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


class CSeq(NamedTuple):
    """``CSeq = 1*DIGIT LWS Method`` (§20.16); the number is below 2**31."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError("malformed CSeq")
        number = parse_int(parts[0], "CSeq number", 2**31 - 1)
        return cls(number, check_token(parts[1], "CSeq method"))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def uri_of_route(text: str) -> SipUri:
    """A Route/Record-Route entry must be a SIP URI in a name-addr (§20.30, §20.34)."""
    na = NameAddr.parse(text)
    if not isinstance(na.uri, SipUri):
        raise SipParseError("Route URI is not a SIP URI")
    return na.uri
