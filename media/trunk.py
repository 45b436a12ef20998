"""The trunk leg: plain RTP/RTCP over UDP towards a SIP peer (RFC 3550 §11, RFC 4961 symmetric RTP).

Sockets come from a configured bind address and port range (an even RTP port and the odd one above it
for RTCP, RFC 3550 §11, unless rtcp-mux). Media is sent to the address in the peer's SDP until a valid
packet arrives; then the leg *latches* to the packet's source address and port (symmetric RTP, RFC 4961;
the usual answer to a peer behind NAT whose SDP carries a private address). Packets from elsewhere are
dropped and counted, except that a leg whose latched source has been silent for ``relatch_after`` seconds
latches anew (the peer's NAT binding changed).

Latching to whoever speaks first lets anyone who can reach the port and guess it take over a call's
media before the peer does (the "RTP bleed" class of attacks on media relays). ``strict_source``
narrows it for trunks that send from the address their SDP announces (carriers' SBCs do): only that IP
address may latch, on any port.

Everything from the wire is validated before use; a bad packet is counted under its reason and dropped,
and a peer sending faster than the token bucket allows is cut to that rate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
import time
from typing import Any

from media.leg import LegCounters, RtcpSink, RtpSink, TokenBucket
from media.rtp import Malformed, is_rtcp, parse_rtp

__all__ = ["PortRange", "TrunkLeg"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic


class PortRange:
    """Even RTP ports from ``low`` to ``high`` (inclusive) on ``host``; 0/0 means any free port."""

    def __init__(self, host: str = "127.0.0.1", low: int = 0, high: int = 0) -> None:
        if low and (low > high or low < 1024 or high > 65535):
            raise ValueError(f"bad RTP port range {low}-{high}")
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.first = low
        self.low = low + (low & 1)
        self.high = high

    def bind_pair(self, rtcp: bool) -> tuple[socket.socket, socket.socket | None]:
        """Bind an even RTP port (and RTP+1 for RTCP); raises OSError if the range is exhausted."""
        if not self.low:
            return self._bind(0), (self._bind(0) if rtcp else None)
        candidates = list(range(self.low, self.high, 2))
        random.shuffle(candidates)
        for port in candidates[:64]:
            try:
                rtp_sock = self._bind(port)
            except OSError:
                continue
            if not rtcp:
                return rtp_sock, None
            try:
                return rtp_sock, self._bind(port + 1)
            except OSError:
                rtp_sock.close()
        raise OSError(f"no free RTP port pair in {self.low}-{self.high} on {self.host}")

    def bind_one(self) -> socket.socket:
        """Bind any one port of the range (WebRTC multiplexes RTP and RTCP on one, RFC 5761); raises
        OSError if none is free."""
        if not self.low:
            return self._bind(0)
        candidates = list(range(self.first, self.high + 1))
        random.shuffle(candidates)
        for port in candidates[:128]:
            try:
                return self._bind(port)
            except OSError:
                continue
        raise OSError(f"no free WebRTC port in {self.low}-{self.high} on {self.host}")

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: TrunkLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.leg._rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.leg.counters.send_errors += 1


class TrunkLeg(asyncio.DatagramProtocol):
    """One call's plain-RTP leg. Create with :meth:`open`; set the peer with :meth:`set_remote`."""

    def __init__(
        self,
        on_rtp: RtpSink,
        on_rtcp: RtcpSink | None = None,
        *,
        max_packets_per_second: float = 400.0,
        relatch_after: float = 2.0,
        strict_source: bool = False,
    ) -> None:
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.counters = LegCounters()
        self._bucket = TokenBucket(max_packets_per_second, max_packets_per_second / 4)
        self.relatch_after = relatch_after
        #: Latch only to the IP address the peer's SDP announced (see the module docstring).
        self.strict_source = strict_source
        self._announced_host: str | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self.latched = False
        self._latched_rtcp = False
        self._last_from_remote = 0.0
        self.rtcp_mux = False
        self.local_host = ""
        self.local_port = 0
        self.local_rtcp_port = 0
        #: This leg's RTP socket in the C pump once :meth:`offload` moved it there (media/fastpath.py).
        self._fast: Any = None

    @classmethod
    async def open(
        cls,
        ports: PortRange,
        on_rtp: RtpSink,
        on_rtcp: RtcpSink | None = None,
        *,
        rtcp_mux: bool = False,
        **kwargs: Any,
    ) -> TrunkLeg:
        leg = cls(on_rtp, on_rtcp, **kwargs)
        leg.rtcp_mux = rtcp_mux
        rtp_sock, rtcp_sock = ports.bind_pair(rtcp=not rtcp_mux)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: leg, sock=rtp_sock)
            if rtcp_sock is not None:
                transport, _ = await loop.create_datagram_endpoint(lambda: _RtcpProtocol(leg), sock=rtcp_sock)
                leg.rtcp_transport = transport
                leg.local_rtcp_port = rtcp_sock.getsockname()[1]
        except BaseException:  # cancelled or refused half-way: the ports go back, whatever holds them
            leg.close()
            rtp_sock.close()
            if rtcp_sock is not None:
                rtcp_sock.close()
            raise
        leg.local_host, leg.local_port = rtp_sock.getsockname()[:2]
        if rtcp_mux:
            leg.local_rtcp_port = leg.local_port
        return leg

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def set_remote(
        self, host: str, port: int, rtcp_port: int | None = None, *, rtcp_mux: bool = False
    ) -> None:
        """Where to send until latched: the peer's SDP connection address and port (RFC 3264 §5)."""
        self.remote = (host, port) if port else None
        self._announced_host = _canonical(host) if port else None
        self.rtcp_mux = rtcp_mux or self.rtcp_mux
        rtcp = port if self.rtcp_mux else (rtcp_port or (port + 1 if port else 0))
        self.remote_rtcp = (host, rtcp) if rtcp else None
        self.latched = self._latched_rtcp = False
        self._sync_fast()

    def offload(self, pump: Any) -> Any:
        """Hand the RTP socket to the C pump (media/fastpath.py) and return its handle there (or None once
        closed). The pump relays media from the latched source; everything else (a new source, RTCP on a
        muxed port, bad packets) comes to :meth:`_accept` as before."""
        if self._fast is not None:
            return self._fast
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None:
            return None
        fd = os.dup(sock.fileno())
        try:
            self._fast = pump.add_trunk(
                fd=fd, on_slow=self._accept, rate=self._bucket.rate, burst=self._bucket.burst
            )
        except BaseException:
            os.close(fd)
            raise
        self.transport = None
        transport.close()
        self._sync_fast()
        return self._fast

    def _sync_fast(self) -> None:
        """Tell the C leg where media goes and whether the source is latched (RFC 4961)."""
        fast = self._fast
        if fast is None:
            return
        fast.latched = False
        if self.remote is None:
            fast.clear_remote()
            return
        try:
            fast.set_remote(self.remote[0], self.remote[1])
        except ValueError:  # not an IP literal: the C leg has nowhere to send
            log.info("trunk media address %r is not an IP address", self.remote[0])
            return
        fast.latched = self.latched

    def counter_totals(self) -> dict[str, int]:
        """This leg's counters, the C pump's share included."""
        return self.counters.plus(self._fast)

    # Receive ---------------------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = _monotonic()
        if not self._bucket.allow(now):
            self.counters.flood_dropped += 1
            return
        self._accept(data, addr, now)

    def _accept(self, data: bytes, addr: Any, now: float) -> None:
        """A datagram that passed the flood bound (from :meth:`datagram_received` or the C pump)."""
        counters = self.counters
        if self.rtcp_mux and is_rtcp(data):
            self._rtcp_received(data, addr)
            return
        header = parse_rtp(data)
        if isinstance(header, Malformed):
            counters.malformed += 1
            return
        remote = self.remote
        if remote is None or remote[0] != addr[0] or remote[1] != addr[1] or not self.latched:
            if not self._latch(addr, now):
                counters.foreign_source += 1
                return
        self._last_from_remote = now
        counters.rtp_received += 1
        self.on_rtp(bytearray(data), header, now)

    def _latch(self, addr: Any, now: float) -> bool:
        """Symmetric RTP (RFC 4961): adopt the source of valid media unless we hear from a fresh one."""
        source = (addr[0], addr[1])
        if self.strict_source and _canonical(source[0]) != self._announced_host:
            return False
        last = self._last_from_remote
        if self._fast is not None:
            last = max(last, self._fast.last_from_remote)
        if self.latched and source != self.remote and now - last < self.relatch_after:
            return False
        if source != self.remote:
            log.info("RTP latched to %s:%d (was %s)", source[0], source[1], self.remote)
        self.remote = source
        self.latched = True
        if self.rtcp_mux:
            self.remote_rtcp = source
        self._sync_fast()
        return True

    def _rtcp_received(self, data: bytes, addr: Any) -> None:
        now = _monotonic()
        if len(data) < 8 or data[0] >> 6 != 2:
            self.counters.malformed += 1
            return
        source = (addr[0], addr[1])
        if not self._latched_rtcp or self.rtcp_mux:
            if self.remote is not None and source[0] != self.remote[0]:
                self.counters.foreign_source += 1
                return
            self.remote_rtcp = source
            self._latched_rtcp = True
        elif source != self.remote_rtcp:
            self.counters.foreign_source += 1
            return
        self.counters.rtcp_received += 1
        if self.on_rtcp is not None:
            self.on_rtcp(data, now)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that has not opened its port yet: not fatal for RTP.
        self.counters.send_errors += 1

    # Send ------------------------------------------------------------------------------------------
    def send_rtp(self, packet: bytes | bytearray) -> None:
        remote = self.remote
        if remote is None:
            return
        if self._fast is not None:
            self._fast.send_rtp(packet)
            return
        transport = self.transport
        if transport is None:
            return
        transport.sendto(packet, remote)
        self.counters.sent += 1

    def send_rtcp(self, data: bytes) -> None:
        target = self.remote_rtcp
        if target is None:
            return
        if self.rtcp_mux and self._fast is not None:
            self._fast.sendto(data, target)
            return
        transport = self.transport if self.rtcp_mux else self.rtcp_transport
        if transport is None:
            return
        transport.sendto(data, target)

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        if self.transport is not None:
            self.transport.close()
        if self.rtcp_transport is not None:
            self.rtcp_transport.close()


def _canonical(host: str) -> str:
    """An IP address in one spelling (IPv6 written any way, an IPv4-mapped one as plain IPv4, as a
    dual-stack socket reports it); other text as is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
