"""Virtual users: the Matrix users that stand for phone parties.

A phone party is named by the SIP URI of its number at our gateway, URL-encoded into the user ID's
localpart after a prefix (MSC2845's example: ``@_sip_01818118181%40sip.example.org:example.org``).
Encoding keeps ``a-z 0-9 - . _`` and writes every other UTF-8 byte as ``%`` + two *lowercase* hex digits,
so localparts stay lowercase (Matrix user IDs are case-sensitive but the grammar of new IDs is lowercase)
and there is exactly one localpart per URI: decoding rejects anything the encoder would not produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .numbers import NotDialable, dial_string

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._")
_HEX = "0123456789abcdef"
_ESCAPE = re.compile(r"%([0-9a-f]{2})")


class NotAVirtualUser(ValueError):
    """A user ID that is not (or not validly) one of ours."""


def encode_localpart(text: str) -> str:
    """Percent-encode ``text`` (UTF-8) with lowercase hex; unreserved lowercase characters stay."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte in _SAFE:
            out.append(chr(byte))
        else:
            out.append("%" + _HEX[byte >> 4] + _HEX[byte & 15])
    return "".join(out)


def decode_localpart(encoded: str) -> str:
    """Exact inverse of :func:`encode_localpart`; raises :class:`NotAVirtualUser` on any other form."""
    raw = bytearray()
    i = 0
    n = len(encoded)
    while i < n:
        ch = encoded[i]
        if ch == "%":
            m = _ESCAPE.match(encoded, i)
            if m is None:
                raise NotAVirtualUser(f"bad escape at position {i}")
            byte = int(m.group(1), 16)
            if byte in _SAFE:
                raise NotAVirtualUser(f"needless escape %{m.group(1)} at position {i}")
            raw.append(byte)
            i += 3
        else:
            code = ord(ch)
            if code > 127 or code not in _SAFE:
                raise NotAVirtualUser(f"character {ch!r} must be escaped")
            raw.append(code)
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAVirtualUser("escapes do not decode as UTF-8") from None


@dataclass(frozen=True)
class PhoneParty:
    """A phone number reachable through the gateway ``host``."""

    number: str
    host: str

    @property
    def sip_uri(self) -> str:
        return f"{self.number}@{self.host}"


@dataclass(frozen=True)
class VirtualUserNamespace:
    """Maps phone numbers ⇄ virtual user IDs for one bridge configuration."""

    prefix: str
    domain: str
    gateway_host: str
    max_number_length: int = 32

    def user_id(self, number: str) -> str:
        """The virtual user for a dialable number (raises :class:`~telebridge.numbers.NotDialable`)."""
        party = PhoneParty(dial_string(number, self.max_number_length), self.gateway_host.lower())
        return f"@{self.prefix}{encode_localpart(party.sip_uri)}:{self.domain}"

    def is_in_namespace(self, user_id: str) -> bool:
        return user_id.startswith("@" + self.prefix) and user_id.endswith(":" + self.domain)

    def party(self, user_id: str) -> PhoneParty:
        """The phone party a user ID names; :class:`NotAVirtualUser` unless it is exactly one we'd make."""
        if not self.is_in_namespace(user_id):
            raise NotAVirtualUser(f"{user_id} is not in the {self.prefix} namespace of {self.domain}")
        localpart = user_id[1 + len(self.prefix) : -(len(self.domain) + 1)]
        uri = decode_localpart(localpart)
        number, at, host = uri.rpartition("@")
        if not at:
            raise NotAVirtualUser(f"{user_id} does not name a SIP URI")
        if host != self.gateway_host.lower():
            raise NotAVirtualUser(f"{user_id} names gateway {host!r}, not ours")
        try:
            canonical = dial_string(number, self.max_number_length)
        except NotDialable as e:
            raise NotAVirtualUser(str(e)) from None
        if canonical != number:
            raise NotAVirtualUser(f"{user_id} is not the canonical ID for {canonical}")
        return PhoneParty(number, host)
