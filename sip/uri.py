"""SIP and SIPS URIs (RFC 3261 §19.1, grammar in §25.1), with RFC 5118 IPv6 references.

A URI keeps the user part as written (with its %-escapes) so that it serialises back byte for byte; the
comparison rules of §19.1.4 (escapes decoded, host and parameter names case-insensitive) are applied by
:meth:`SipUri.__eq__`. Non-SIP schemes (``tel:``, ``urn:``, ``http:``) appear in Request-URIs and in
To/From; they are kept verbatim as :class:`AbsoluteUri`.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from sip.errors import SipParseError

# §25.1 character classes.
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MARK = frozenset("-_.!~*'()")
_UNRESERVED = _ALNUM | _MARK
_USER_CHARS = _UNRESERVED | frozenset("&=+$,;?/%")
_PASSWORD_CHARS = _UNRESERVED | frozenset("&=+$,%")
_PARAM_CHARS = _UNRESERVED | frozenset("[]/:&+$%")
_HEADER_CHARS = _UNRESERVED | frozenset("[]/?:+$%=&")
_HOSTNAME_CHARS = _ALNUM | frozenset("-.")
_SCHEME_CHARS = _ALNUM | frozenset("+-.")
_HEX = frozenset("0123456789abcdefABCDEF")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9.\-]+")
#: sip:user@host:port;params with only plain characters (the fast path of SipUri.parse)
_SIMPLE_URI = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)@)?([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$=]*)*)",
    re.IGNORECASE,
)


def check_escapes(text: str, what: str) -> None:
    """Every ``%`` must start an ``escaped = "%" HEXDIG HEXDIG`` (§25.1)."""
    i = text.find("%")
    while i != -1:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise SipParseError(f"bad %-escape in {what}")
        i = text.find("%", i + 3)


_INVALID: dict[frozenset[str], re.Pattern[str]] = {}


def _invalid_re(allowed: frozenset[str]) -> re.Pattern[str]:
    """A compiled ``[^allowed]`` class: one C-level scan instead of a Python loop per character."""
    pattern = _INVALID.get(allowed)
    if pattern is None:
        pattern = re.compile("[^" + "".join(re.escape(c) for c in sorted(allowed)) + "]")
        _INVALID[allowed] = pattern
    return pattern


def _check_chars(text: str, allowed: frozenset[str], what: str) -> None:
    bad = _invalid_re(allowed).search(text)
    if bad is not None:
        raise SipParseError(f"invalid character {bad.group()!r} in {what}")
    if "%" in text:
        check_escapes(text, what)


def parse_host(text: str) -> str:
    """Validate ``host = hostname / IPv4address / IPv6reference`` and return it as written."""
    if not text:
        raise SipParseError("empty host")
    if text[0] == "[":
        if text[-1] != "]":
            raise SipParseError("unterminated IPv6 reference")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise SipParseError("invalid IPv6 reference") from None
        return text
    if _HOSTNAME_RE.fullmatch(text) is None:
        raise SipParseError("invalid character in host")
    return text


def parse_port(text: str) -> int:
    """``port = 1*DIGIT``; leading zeros are legal (§25.1), values above 65535 are not."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 10:
        raise SipParseError("invalid port")
    port = int(text)
    if port > 65535:
        raise SipParseError("port out of range")
    return port


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``hostport`` into host (validated, as written) and optional port."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise SipParseError("unterminated IPv6 reference")
        host = parse_host(text[: end + 1])
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError("garbage after IPv6 reference")
        return host, parse_port(rest[1:])
    host, sep, port = text.partition(":")
    return parse_host(host), (parse_port(port) if sep else None)


def parse_uri_params(text: str, what: str = "URI parameter") -> dict[str, str | None]:
    """Parse ``*( ";" pname [ "=" pvalue ] )`` (text without the leading ``;``)."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if not name:
            raise SipParseError(f"empty {what} name")
        _check_chars(name, _PARAM_CHARS, what)
        if sep:
            if not value:
                raise SipParseError(f"empty {what} value")
            _check_chars(value, _PARAM_CHARS, what)
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept verbatim (``absoluteURI`` of §25.1)."""

    __slots__ = ("scheme", "text")

    def __init__(self, text: str) -> None:
        scheme, sep, rest = text.partition(":")
        if not sep or not scheme or not rest or scheme[0] not in _ALNUM:
            raise SipParseError("not an absolute URI")
        for ch in scheme:
            if ch not in _SCHEME_CHARS:
                raise SipParseError("invalid URI scheme")
        for ch in rest:
            if ch <= " " or ch in '<>"' or ch == "\x7f":
                raise SipParseError("invalid character in URI")
        if "%" in rest:
            check_escapes(rest, "URI")
        self.scheme = scheme.lower()
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"AbsoluteUri({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AbsoluteUri) and self.text.lower() == other.text.lower()

    def __hash__(self) -> int:
        return hash(self.text.lower())


class SipUri:
    """``SIP-URI`` / ``SIPS-URI`` (§19.1.1): ``sip:user:password@host:port;uri-parameters?headers``."""

    __slots__ = ("headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        scheme: str = "sip",
        password: str | None = None,
        headers: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}
        self.headers = headers

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP/SIPS URI; raise :class:`SipParseError` naming what is wrong.

        The common shape (no password, escapes, IPv6 or URI headers) is matched by one compiled
        expression; everything else, and every error, goes through the general parser below.
        """
        m = _SIMPLE_URI.fullmatch(text)
        if m is not None:
            scheme, user, host, port_text, param_text = m.groups()
            port = int(port_text) if port_text is not None else None
            if port is None or port <= 65535:
                params = parse_uri_params(param_text[1:]) if param_text else {}
                return cls(host, user, port, params, scheme.lower())
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        scheme, sep, rest = text.partition(":")
        lscheme = scheme.lower()
        if not sep or lscheme not in ("sip", "sips"):
            raise SipParseError("not a sip: or sips: URI")
        if not rest:
            raise SipParseError("empty SIP URI")
        headers: str | None = None
        qpos = rest.find("?")
        at = rest.rfind("@")
        if qpos != -1 and qpos > at:
            headers = rest[qpos + 1 :]
            rest = rest[:qpos]
            if not headers:
                raise SipParseError("empty URI headers")
            for hpart in headers.split("&"):
                hname, hsep, _ = hpart.partition("=")
                if not hname or not hsep:
                    raise SipParseError("malformed URI header")
            _check_chars(headers, _HEADER_CHARS, "URI headers")
        user: str | None = None
        password: str | None = None
        if at != -1:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            user, psep, pw = userinfo.partition(":")
            if not user:
                raise SipParseError("empty user in SIP URI")
            _check_chars(user, _USER_CHARS, "URI user")
            if psep:
                _check_chars(pw, _PASSWORD_CHARS, "URI password")
                password = pw
        hostport, psep, ptext = rest.partition(";")
        params = parse_uri_params(ptext) if psep else {}
        host, port = split_hostport(hostport)
        return cls(host, user, port, params, lscheme, password, headers)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        for name, value in self.params.items():
            parts += (";", name) if value is None else (";", name, "=", value)
        if self.headers:
            parts += ("?", self.headers)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def host_address(self) -> str:
        """The host without IPv6 brackets, as socket calls want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def copy(self) -> SipUri:
        return SipUri(
            self.host, self.user, self.port, dict(self.params), self.scheme, self.password, self.headers
        )

    def _key(self) -> tuple[object, ...]:
        """Comparison key per §19.1.4: escapes decoded, host and param names case-insensitive.

        Parameters that appear in only one URI are ignored, except user/ttl/method/maddr/transport, which
        must match; that asymmetric rule is applied in ``__eq__``.
        """
        return (
            self.scheme,
            unquote(self.user) if self.user is not None else None,
            unquote(self.password) if self.password is not None else None,
            self.host.lower(),
            self.port,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri) or self._key() != other._key():
            return False
        for name in ("user", "ttl", "method", "maddr", "transport"):
            a, b = self.params.get(name, ""), other.params.get(name, "")
            if (a or "").lower() != (b or "").lower():
                return False
        for name, value in self.params.items():
            if name in other.params:
                ov = other.params[name]
                if (value or "").lower() != (ov or "").lower():
                    return False
        return True

    def __hash__(self) -> int:
        return hash(self._key())


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any URI that may appear in a Request-URI or name-addr (§25.1 ``Request-URI``)."""
    scheme = text[:5].lower()
    if scheme.startswith("sip:") or scheme.startswith("sips:"):
        return SipUri.parse(text)
    return AbsoluteUri(text)
