"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760), both roles, and the
IP allow-list for inbound peers.

UAC: :func:`parse_challenge` reads a ``WWW-Authenticate``/``Proxy-Authenticate`` value and
:class:`DigestClient` answers it (MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256; ``qop=auth`` and
``auth-int`` with ``nc``/``cnonce``). UAS: :class:`DigestServer` issues stateless HMAC-signed nonces and
verifies credentials. :class:`AllowList` holds the networks trunks may send from.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sip.errors import SipParseError
from sip.headers import quote, read_quoted

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}
try:  # SHA-512/256 depends on the OpenSSL build.
    hashlib.new("sha512_256")
    _HASHES["SHA-512-256"] = lambda b: hashlib.new("sha512_256", b).hexdigest()
except ValueError:  # pragma: no cover - depends on the platform
    pass


def _hash_for(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    """Return (hash function, is-session-variant) for an RFC 7616 §3.3 algorithm name."""
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    if sess:
        name = name[:-5]
    fn = _HASHES.get(name)
    if fn is None:
        raise SipParseError(f"unsupported digest algorithm {algorithm}")
    return fn, sess


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Parse ``scheme auth-param *(COMMA auth-param)``; quoted values are unquoted, names lower-cased."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not scheme:
        raise SipParseError("empty authentication scheme")
    params: dict[str, str] = {}
    i = 0
    n = len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq == -1:
            raise SipParseError("auth-param without '='")
        name = rest[i:eq].strip().lower()
        if not name:
            raise SipParseError("empty auth-param name")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            val, i = read_quoted(rest, i)
        else:
            start = i
            while i < n and rest[i] != ",":
                i += 1
            val = rest[start:i].strip()
        params[name] = val
    return scheme, params


@dataclass(slots=True)
class Challenge:
    """A digest challenge (RFC 7616 §3.3 / RFC 3261 §22.4)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def parse_challenge(value: str) -> Challenge:
    scheme, params = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme}")
    if "nonce" not in params:
        raise SipParseError("digest challenge without nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username/password; ``realm=None`` answers any realm (the usual single-trunk case)."""

    username: str
    password: str
    realm: str | None = None


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1."""
    h, sess = _hash_for(algorithm)
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + h(body)
    ha2 = h(a2.encode())
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


@dataclass(slots=True)
class DigestClient:
    """Answers challenges; remembers nonce counts so a reused nonce gets nc=2, 3, … (RFC 7616 §3.4)."""

    credentials: list[Credentials] = field(default_factory=list)
    _nc: dict[str, int] = field(default_factory=dict)

    def find(self, realm: str) -> Credentials | None:
        for cred in self.credentials:
            if cred.realm == realm:
                return cred
        for cred in self.credentials:
            if cred.realm is None:
                return cred
        return None

    def authorization(
        self, challenge: Challenge, method: str, uri: str, body: bytes = b"", cnonce: str | None = None
    ) -> str | None:
        """The Authorization/Proxy-Authorization value, or None without credentials for the realm or
        with an algorithm we cannot compute."""
        cred = self.find(challenge.realm)
        if cred is None:
            return None
        try:
            _hash_for(challenge.algorithm)
        except SipParseError:
            return None
        qop: str | None = None
        if "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        nc = ""
        if qop is not None:
            count = self._nc.get(challenge.nonce, 0) + 1
            self._nc[challenge.nonce] = count
            nc = f"{count:08x}"
            cnonce = cnonce or os.urandom(8).hex()
        elif challenge.algorithm.upper().endswith("-SESS"):
            cnonce = cnonce or os.urandom(8).hex()
        response = digest_response(
            challenge.algorithm,
            cred.username,
            challenge.realm,
            cred.password,
            method,
            uri,
            challenge.nonce,
            qop,
            nc,
            cnonce or "",
            body,
        )
        parts = [
            f"Digest username={quote(cred.username)}",
            f"realm={quote(challenge.realm)}",
            f"nonce={quote(challenge.nonce)}",
            f"uri={quote(uri)}",
            f"response={quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if cnonce:
            parts.append(f"cnonce={quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={quote(challenge.opaque)}")
        if qop is not None:
            parts += (f"qop={qop}", f"nc={nc}")
        return ", ".join(parts)


class DigestServer:
    """UAS-side digest (RFC 3261 §22.1, §22.4) with stateless nonces: ``timestamp:HMAC(secret, ts)``.

    A nonce older than ``nonce_lifetime`` is answered with a fresh challenge carrying ``stale=true``.
    """

    def __init__(
        self,
        realm: str,
        lookup: Callable[[str], str | None],
        algorithm: str = "MD5",
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _hash_for(algorithm)
        self.realm = realm
        self.lookup = lookup
        self.algorithm = algorithm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret or os.urandom(16)
        self._clock = clock

    def _nonce(self, ts: int) -> str:
        mac = hmac.new(self._secret, str(ts).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{ts:x}.{mac}"

    def challenge(self, stale: bool = False) -> str:
        nonce = self._nonce(int(self._clock()))
        value = f'Digest realm={quote(self.realm)}, nonce="{nonce}", algorithm={self.algorithm}, qop="auth"'
        return value + (", stale=true" if stale else "")

    def verify(self, authorization: str, method: str, body: bytes = b"") -> tuple[bool, bool]:
        """Check an Authorization value; return (ok, stale). Never raises on malformed input."""
        try:
            scheme, p = parse_auth_params(authorization)
        except SipParseError:
            return False, False
        if scheme.lower() != "digest" or p.get("realm") != self.realm:
            return False, False
        nonce = p.get("nonce", "")
        ts_text, _, _ = nonce.partition(".")
        try:
            ts = int(ts_text, 16)
        except ValueError:
            return False, False
        if not hmac.compare_digest(self._nonce(ts), nonce):
            return False, False
        username = p.get("username")
        password = self.lookup(username) if username is not None else None
        if password is None or "uri" not in p or "response" not in p:
            return False, False
        algorithm = p.get("algorithm", "MD5")
        if algorithm.upper() != self.algorithm.upper():
            return False, False
        qop = p.get("qop")
        if qop is not None and qop not in ("auth", "auth-int"):
            return False, False
        expected = digest_response(
            algorithm,
            username or "",
            self.realm,
            password,
            method,
            p["uri"],
            nonce,
            qop,
            p.get("nc", ""),
            p.get("cnonce", ""),
            body,
        )
        if not hmac.compare_digest(expected, p["response"].lower()):
            return False, False
        if self._clock() - ts > self.nonce_lifetime:
            return False, True
        return True, False


class AllowList:
    """Source addresses allowed to send requests (trunk IPs). An empty list allows everyone."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)
