"""The asyncio edge (RFC 3261 §18): sockets, connections, name resolution and the clock.

:class:`SipEndpoint` owns a UDP socket and TCP/TLS listeners and connections, and drives one
:class:`~sip.useragent.UserAgentCore`: bytes in → ``core.receive``; after every input it sends what the
core produced, re-arms the single loop timer at ``core.get_timer()``, and hands events to a callback.
Nothing from the wire can raise out of here: the core answers or drops malformed input, and a broken
stream (unframeable) is closed and logged.

Name resolution (:class:`Resolver`) follows RFC 3263 §4.2: an IP literal is used as is; a name with a
port is looked up with A/AAAA; a name without a port first tries SRV (``_sip._udp``, ``_sip._tcp``,
``_sips._tcp``) then A/AAAA on 5060/5061. SRV goes through dnspython when ``dns=True``; tests use a static
SRV table and loopback names only, so no resolver traffic leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from sip.errors import SipParseError
from sip.message import StreamFramer
from sip.useragent import Event, Target, TargetUnreachable, UserAgentCore

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


_IP_CACHE: dict[str, bool] = {}


def _is_ip(host: str) -> bool:
    """Whether ``host`` is an IP literal. Cached: ``ipaddress`` parsing costs more than the send itself,
    and a trunk talks to a handful of addresses (the cache is cleared when it grows past 4096)."""
    known = _IP_CACHE.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host)
        result = True
    except ValueError:
        result = False
    if len(_IP_CACHE) >= 4096:
        _IP_CACHE.clear()
    _IP_CACHE[host] = result
    return result


class Resolver:
    """RFC 3263 server location, cached for the record TTL (or ``cache_seconds`` for static data)."""

    def __init__(self, srv: dict[str, list[SrvRecord]] | None = None, dns: bool = False) -> None:
        self.srv = srv or {}
        self.dns = dns
        self._cache: dict[tuple[str, str, int | None], list[tuple[str, int]]] = {}

    async def resolve(self, target: Target) -> list[tuple[str, int]]:
        """Addresses to try in order, as (ip, port)."""
        host = target.host
        if _is_ip(host):
            return [(host, target.port or DEFAULT_PORTS.get(target.transport, 5060))]
        key = (target.transport, host.lower(), target.port)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result: list[tuple[str, int]] = []
        if target.port is None:
            for rec in await self._srv(SRV_PREFIX.get(target.transport, "_sip._udp.") + host):
                result += [(ip, rec.port) for ip in await self._addresses(rec.target)]
        if not result:
            port = target.port or DEFAULT_PORTS.get(target.transport, 5060)
            result = [(ip, port) for ip in await self._addresses(host)]
        self._cache[key] = result
        return result

    def demote(self, target: Target) -> None:
        """The first address for ``target`` did not answer: try the others first from now on."""
        key = (target.transport, target.host.lower(), target.port)
        cached = self._cache.get(key)
        if cached and len(cached) > 1:
            self._cache[key] = [*cached[1:], cached[0]]

    async def _srv(self, name: str) -> list[SrvRecord]:
        records = list(self.srv.get(name.lower(), ()))
        if not records and self.dns:
            records = await self._srv_dns(name)
        return _order_srv(records)

    @staticmethod
    async def _srv_dns(name: str) -> list[SrvRecord]:
        try:
            import dns.asyncresolver  # type: ignore[import-not-found,unused-ignore]
            import dns.exception  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # pragma: no cover - dnspython is a dependency
            return []
        try:
            answer = await dns.asyncresolver.resolve(name, "SRV")
        except Exception:  # NXDOMAIN, timeout, no answer: fall back to A/AAAA (RFC 3263 §4.2)
            return []
        return [SrvRecord(r.priority, r.weight, r.port, str(r.target).rstrip(".")) for r in answer]

    @staticmethod
    async def _addresses(host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=2)  # SOCK_DGRAM: one entry per address
        except OSError:
            return []
        seen: list[str] = []
        for info in infos:
            ip = str(info[4][0])
            if ip not in seen:
                seen.append(ip)
        return seen


def _order_srv(records: list[SrvRecord]) -> list[SrvRecord]:
    """RFC 2782: ascending priority; within one priority, weighted random order."""
    out: list[SrvRecord] = []
    for prio in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == prio]
        while group:
            total = sum(r.weight for r in group)
            pick = random.uniform(0, total) if total else 0
            acc = 0
            for r in group:
                acc += r.weight
                if acc >= pick:
                    break
            out.append(r)
            group.remove(r)
    return out


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.endpoint._input(data, Target("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _StreamProtocol(asyncio.Protocol):
    """One TCP/TLS connection: Content-Length framing (§18.3), registered by peer address."""

    def __init__(self, endpoint: SipEndpoint, transport_name: str) -> None:
        self.endpoint = endpoint
        self.name = transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Target | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = Target(self.name, str(peer[0]), int(peer[1]))
        self.endpoint._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.framer.feed(data)
        try:
            for chunk in self.framer.messages():
                self.endpoint._input(chunk, self.peer)
            if self.framer.keepalives:
                # RFC 5626 §3.5.1: answer a double-CRLF ping with a single CRLF pong.
                self.framer.keepalives = 0
                if self.transport is not None:
                    self.transport.write(b"\r\n")
        except SipParseError as exc:
            log.info("closing %s connection from %s: %s", self.name, self.peer, exc.reason)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        conns = self.endpoint._connections
        for key in [k for k, v in conns.items() if v is self]:  # the address and any name aliases
            del conns[key]

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class SipEndpoint:
    """Binds a :class:`UserAgentCore` to sockets and the event loop clock."""

    def __init__(
        self,
        core: UserAgentCore,
        on_event: Callable[[Event], None],
        resolver: Resolver | None = None,
        tls_client_context: ssl.SSLContext | None = None,
    ) -> None:
        self.core = core
        self.on_event = on_event
        self.resolver = resolver or Resolver()
        self.tls_client_context = tls_client_context
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[Target, _StreamProtocol] = {}
        self._pending: dict[Target, list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def now(self) -> float:
        return self._loop.time()

    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port)
        )
        self._udp = transport
        sock = transport.get_extra_info("sockname")
        return str(sock[0]), int(sock[1])

    async def listen_tcp(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        name = "TLS" if ssl_context is not None else "TCP"
        server = await self._loop.create_server(
            lambda: _StreamProtocol(self, name), host, port, ssl=ssl_context
        )
        self._servers.append(server)
        sock = server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    def pump(self) -> None:
        """Send the core's output, deliver its events, and re-arm the timer. Call after any command."""
        core = self.core
        for data, target in core.take_output():
            self._send(data, target)
        event = core.next_event()
        while event is not None:
            if isinstance(event, TargetUnreachable):
                self.resolver.demote(event.target)
            try:
                self.on_event(event)
            except Exception:  # the application's handler must not take the transport down
                log.exception("event handler failed for %r", event)
            event = core.next_event()
        at = core.get_timer()
        if at is not None and (self._timer_at is None or at < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timer(self._loop.time())
        except Exception:  # keep the timer chain alive whatever happened
            log.exception("internal error in timer handling")
        self.pump()

    def _input(self, data: bytes, source: Target) -> None:
        try:
            self.core.receive(data, source, self._loop.time())
        except Exception:  # a bug, not bad input (the core answers that); keep serving everyone else
            log.exception("internal error handling %d bytes from %s", len(data), source)
        self.pump()

    def _send(self, data: bytes, target: Target) -> None:
        transport = target.transport
        if transport == "UDP":
            if self._udp is None:
                log.warning("no UDP socket to send to %s", target)
                return
            if target.port is not None and _is_ip(target.host):
                self._udp.sendto(data, (target.host, target.port))
                return
        else:
            conn = self._connections.get(target)
            if conn is not None and conn.alive:
                conn.write(data)
                return
            pending = self._pending.get(target)
            if pending is not None:
                pending.append(data)
                return
            self._pending[target] = [data]
        task = self._loop.create_task(self._send_slow(data, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_slow(self, data: bytes, target: Target) -> None:
        """Resolve a name (RFC 3263) and/or open a connection, then send."""
        try:
            addresses = await self.resolver.resolve(target)
            if not addresses:
                log.info("cannot resolve %s", target.host)
                self._failed(target)
                return
            if target.transport == "UDP":
                if self._udp is not None:
                    # Only addresses of the socket's family are reachable from it.
                    v6 = self._udp.get_extra_info("socket").family == socket.AF_INET6
                    usable = [a for a in addresses if (":" in a[0]) == v6]
                    if usable:
                        self._udp.sendto(data, usable[0])
                return
            queued = self._pending.pop(target, [data])
            for ip, port in addresses:
                key = Target(target.transport, ip, port)
                conn = self._connections.get(key)
                if conn is None or not conn.alive:
                    try:
                        conn = await self._connect(target.transport, ip, port, target.host)
                    except OSError as exc:
                        log.info("cannot connect to %s:%d over %s: %s", ip, port, target.transport, exc)
                        continue
                if target != key:
                    self._connections[target] = conn
                for chunk in queued:
                    conn.write(chunk)
                return
            self._failed(target)
        except Exception:
            log.exception("sending to %s failed", target)
        finally:
            self._pending.pop(target, None)

    def _failed(self, target: Target) -> None:
        """Tell the core that nothing could be sent to ``target``, so its transactions fail now."""
        self.core.transport_error(target, self._loop.time())
        self.pump()

    async def _connect(self, transport: str, ip: str, port: int, server_name: str) -> _StreamProtocol:
        ctx: ssl.SSLContext | None = None
        if transport == "TLS":
            ctx = self.tls_client_context or ssl.create_default_context()
        _, proto = await self._loop.create_connection(
            lambda: _StreamProtocol(self, transport),
            ip,
            port,
            ssl=ctx,
            server_hostname=server_name if ctx is not None else None,
        )
        return proto

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._udp is not None:
            self._udp.close()
