"""Is this phone number a real Matrix user? Identity Service API v2 lookups with hashed addresses.

The flow per server (Matrix spec, Identity Service API):
1. an OpenID token from the homeserver for the bridge bot (Client-Server "OpenID") →
   ``POST /_matrix/identity/v2/account/register`` → an identity-server access token;
2. ``GET /_matrix/identity/v2/terms``; if there are policies, accept them (``identity.accept_terms``);
3. ``GET /_matrix/identity/v2/hash_details`` → the lookup pepper;
4. ``POST /_matrix/identity/v2/lookup`` with ``sha256("<number without +> msisdn <pepper>")``, URL-safe
   unpadded base64; on ``M_INVALID_PEPPER`` fetch the pepper again, on 401 register again, on
   ``M_TERMS_NOT_SIGNED`` accept the (new) terms again — each at most once per lookup.

Answers (found or not) are cached for ``identity.cache_ttl`` seconds. A lookup never blocks longer than
``identity.timeout``: an unreachable server means "not found" and the virtual user is used.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from . import metrics

log = logging.getLogger("telebridge.identity")

OpenIdToken = Callable[[], Awaitable[dict[str, Any]]]

_RECOVERABLE = frozenset({"M_UNAUTHORIZED", "M_INVALID_PEPPER", "M_TERMS_NOT_SIGNED"})
"""Error codes a lookup recovers from by registering, fetching the pepper or accepting terms again."""


def lookup_hash(address: str, medium: str, pepper: str) -> str:
    """The v2 lookup hash: sha256 of ``"<address> <medium> <pepper>"``, URL-safe base64 without padding."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def hashed_msisdn(number: str, pepper: str) -> str:
    """The lookup hash of an E.164 number; MSISDNs are written without the leading ``+``."""
    return lookup_hash(number.lstrip("+"), "msisdn", pepper)


class IdentityError(Exception):
    """An identity server answered something we cannot use."""


@dataclass
class _Server:
    base: str
    token: str | None = None
    pepper: str | None = None
    algorithms: list[str] = field(default_factory=list)


class IdentityLookup:
    def __init__(
        self,
        servers: list[str],
        openid_token: OpenIdToken,
        *,
        accept_terms: bool = True,
        cache_ttl: float = 3600,
        timeout: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.servers = [_Server(s.rstrip("/")) for s in servers]
        self.openid_token = openid_token
        self.accept_terms = accept_terms
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self._session = session
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def lookup(self, number: str) -> str | None:
        """The Matrix user an E.164 number is bound to, or None (also when no server could answer in time)."""
        cached = self._cache.get(number)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            found = await asyncio.wait_for(self._lookup_all(number), self.timeout)
        except (TimeoutError, aiohttp.ClientError, IdentityError, ValueError) as e:
            metrics.ERRORS.labels("identity_lookup").inc()
            log.warning("Identity lookup for a number failed (%s); using the virtual user", type(e).__name__)
            return None  # not cached: the next lookup tries again
        self._cache[number] = (found, now + self.cache_ttl)
        metrics.LOOKUPS.labels("identity", "found" if found else "not_found").inc()
        return found

    async def _lookup_all(self, number: str) -> str | None:
        for server in self.servers:
            found = await self._lookup_one(server, number)
            if found:
                return found
        return None

    async def _lookup_one(self, server: _Server, number: str) -> str | None:
        """One server's answer, recovering from what a long-lived client meets (each at most once):

        - 401 on any call: the server forgot our token (restart from a backup, logout) → register again;
        - ``M_INVALID_PEPPER``: the pepper was rotated → fetch ``/hash_details`` again;
        - ``M_TERMS_NOT_SIGNED``: the server published new terms → accept them again.

        A server can show several at once (a restore *and* a new pepper), and ``/hash_details`` answers
        401 or 403 as ``/lookup`` does, so both go through the same recovery; otherwise the client keeps
        its stale token or consent and every later lookup fails until the bridge restarts.
        """
        recovered: set[str] = set()
        while True:
            if server.token is None:
                await self._register(server)
            status, body = 200, None
            if server.pepper is None:
                status, body = await self._request(server, "GET", "/_matrix/identity/v2/hash_details")
                if status == 200:
                    self._use_hash_details(server, body)
            if server.pepper is not None:
                if "sha256" not in server.algorithms:
                    raise IdentityError(f"{server.base} offers no sha256 lookups")
                address = hashed_msisdn(number, server.pepper)
                status, body = await self._request(
                    server,
                    "POST",
                    "/_matrix/identity/v2/lookup",
                    {"addresses": [address], "algorithm": "sha256", "pepper": server.pepper},
                )
                if status == 200 and isinstance(body, dict):
                    mappings = body.get("mappings", {})
                    found = mappings.get(address) if isinstance(mappings, dict) else None
                    return found if isinstance(found, str) and found.startswith("@") else None
            errcode = body.get("errcode") if isinstance(body, dict) else None
            fault = "M_UNAUTHORIZED" if status == 401 else errcode
            if fault in recovered or fault not in _RECOVERABLE:
                raise IdentityError(f"{server.base} answered {status} {errcode}")
            assert fault is not None
            recovered.add(fault)
            if fault == "M_UNAUTHORIZED":
                server.token = None
            elif fault == "M_INVALID_PEPPER":
                server.pepper = None
            else:
                await self._accept_terms(server)

    async def _register(self, server: _Server) -> None:
        openid = await self.openid_token()
        status, body = await self._request(
            server, "POST", "/_matrix/identity/v2/account/register", openid, auth=False
        )
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise IdentityError(f"register answered {status}")
        server.token = body["token"]
        await self._accept_terms(server)

    async def _accept_terms(self, server: _Server) -> None:
        """Accept every policy the server lists (``identity.accept_terms``); a refusal is left for the
        next call to report as ``M_TERMS_NOT_SIGNED``."""
        if not self.accept_terms:
            return
        status, terms = await self._request(server, "GET", "/_matrix/identity/v2/terms")
        policies = terms.get("policies", {}) if status == 200 and isinstance(terms, dict) else {}
        urls = [
            version.get("url")
            for policy in (policies.values() if isinstance(policies, dict) else [])
            if isinstance(policy, dict)
            for key, version in policy.items()
            if key != "version" and isinstance(version, dict) and isinstance(version.get("url"), str)
        ]
        if urls:
            status, body = await self._request(
                server, "POST", "/_matrix/identity/v2/terms", {"user_accepts": urls}
            )
            if status != 200:
                log.warning("%s refused our acceptance of its terms: %s %s", server.base, status, body)

    @staticmethod
    def _use_hash_details(server: _Server, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("lookup_pepper"), str):
            raise IdentityError(f"{server.base} sent hash_details without a pepper")
        server.pepper = body["lookup_pepper"]
        algorithms = body.get("algorithms")
        server.algorithms = (
            [a for a in algorithms if isinstance(a, str)] if isinstance(algorithms, list) else []
        )

    async def _request(
        self, server: _Server, method: str, path: str, body: Any = None, auth: bool = True
    ) -> tuple[int, Any]:
        """One request, sent again once if a kept-alive connection turns out to be dead.

        The identity server closes idle connections when it restarts (or a proxy in front of it times
        them out); the next request on the pooled connection then fails before any answer. aiohttp
        retries that only for idempotent methods, and every v2 call here is a POST except two GETs.
        All of them are safe to repeat (a lookup reads; a second register only issues another token;
        accepting terms twice is a no-op), so without this a restarted sydent made the next dial-pad
        lookup fall back to the virtual user. A refused *new* connection is not retried: nobody listens.
        """
        headers = {"Authorization": f"Bearer {server.token}"} if auth and server.token else {}
        for attempt in range(2):
            try:
                async with self._http().request(
                    method, server.base + path, json=body, headers=headers
                ) as resp:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    return resp.status, data
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt:
                    raise
                log.debug("%s %s: kept-alive connection was closed; sending again", method, path)
        raise AssertionError("unreachable")
