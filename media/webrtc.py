"""The WebRTC leg: ICE and DTLS from aiortc/aioice, media on our own path through a raw SRTP tap.

aiortc (pinned 1.16.0) is used for what it does well — ICE connectivity checks and consent (aioice,
RFC 8445/7675), the DTLS handshake and DTLS-SRTP key export (RFC 5764) — and nothing else: its RTP stack
decodes every frame and hops threads, which is what limits it to a few dozen calls per core.

**The tap.** aioice hands every non-STUN datagram to ``Connection.data_received(data, component)``, which
queues it for aiortc's DTLS reader. After the handshake we replace that method *on this connection's
instance* with :meth:`WebRtcLeg._datagram`: RTP/RTCP (first byte 128-191, RFC 7983 §7) is unprotected
right there with the SRTP sessions aiortc set up from the DTLS keying material (pylibsrtp), and handed to
the relay synchronously — no queue, no task switch; anything else (DTLS alerts, close_notify) still goes to
aiortc. On the nominated pair's socket the same test runs even earlier, in place of aioice's
``StunProtocol.datagram_received`` (which would first try to parse every media packet as STUN and catch
the failure). Sending protects with the same sessions and writes to the nominated pair's UDP transport
directly. ``tests/media/test_webrtc_tap.py`` checks every private name this relies on, so an aiortc,
aioice or pylibsrtp upgrade that moves them fails loudly there.

**SRTP per packet.** pylibsrtp's ``Session.protect``/``unprotect`` take ``bytes`` and, per packet, go
through two Python frames, allocate an ``int *``, copy the packet into their buffer and copy the result
out. The tap calls libsrtp's ``srtp_unprotect``/``srtp_protect`` through pylibsrtp's own cffi binding
instead, on the session pylibsrtp created: received packets are unprotected in place in the ``bytearray``
the relay rewrites anyway (one copy of the datagram instead of three), and outgoing ones are protected in
one preallocated buffer per leg (one copy in, the ``bytes`` to send out). Measured with
``benchmarks/relay_callgrind.py`` (see ``benchmarks/README.md``).

ICE: host candidates on the configured bind addresses only (aioice would skip 127.0.0.1 and use every
interface), STUN/TURN only when configured. Consent expiry (RFC 7675, ~30 s) or ICE failure ends the leg
through ``on_closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pylibsrtp
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, server_reflexive_candidate
from aiortc import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceServer,
    RTCIceTransport,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from pylibsrtp import _binding as _srtp_binding

from media.leg import LegCounters, RtcpSink, RtpSink, TokenBucket
from media.rtp import MAX_PACKET_SIZE, Malformed, is_rtcp, parse_rtp
from media.trunk import PortRange
from sdp import MediaDescription, SessionDescription

__all__ = ["WebRtcLeg", "WebRtcState"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic
_certificate: RTCCertificate | None = None
_ffi = _srtp_binding.ffi
_from_buffer = _ffi.from_buffer
_srtp_protect = _srtp_binding.lib.srtp_protect
_srtp_unprotect = _srtp_binding.lib.srtp_unprotect
#: The same functions as addresses, for the C pump (media/fastpath.py): it calls pylibsrtp's libsrtp too.
_PROTECT_ADDRESS = int(_ffi.cast("uintptr_t", _ffi.addressof(_srtp_binding.lib, "srtp_protect")))
_UNPROTECT_ADDRESS = int(_ffi.cast("uintptr_t", _ffi.addressof(_srtp_binding.lib, "srtp_unprotect")))
#: Room libsrtp may add after an RTP packet (auth tag + MKI), as pylibsrtp reserves it.
_TRAILER = pylibsrtp.SRTP_MAX_TRAILER_LEN


def shared_certificate() -> RTCCertificate:
    """One DTLS certificate per process (as browsers do per origin); key generation costs milliseconds."""
    global _certificate
    if _certificate is None or _certificate.expires.timestamp() < time.time() + 86400:
        _certificate = RTCCertificate.generateCertificate()
    return _certificate


class WebRtcState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


class WebRtcLeg:
    """One call's WebRTC leg (one BUNDLEd audio stream with rtcp-mux)."""

    def __init__(
        self,
        on_rtp: RtpSink,
        on_rtcp: RtcpSink | None = None,
        on_closed: Callable[[str], None] | None = None,
        *,
        bind_addresses: tuple[str, ...] = ("127.0.0.1",),
        ice_servers: list[RTCIceServer] | None = None,
        max_packets_per_second: float = 400.0,
        connect_timeout: float = 30.0,
        relay_only: bool = False,
        port_range: tuple[int, int] = (0, 0),
    ) -> None:
        """``relay_only``: offer only TURN-relayed candidates (RFC 8445 §5.1.1.2 leaves which candidates to
        offer to policy; W3C ``iceTransportPolicy: "relay"``), so Matrix clients never learn the media
        host's address and every packet passes the operator's TURN server. ``port_range``: the UDP ports
        host candidates bind to (inclusive; 0/0: any), for firewalls that open a fixed range."""
        self.on_rtp = on_rtp
        self.port_range = port_range
        self.on_rtcp = on_rtcp
        self.on_closed = on_closed
        #: Called once ICE and DTLS are up and media flows through the tap.
        self.on_connected: Callable[[], None] | None = None
        self.bind_addresses = bind_addresses
        self.counters = LegCounters()
        self.state = WebRtcState.NEW
        self.connect_timeout = connect_timeout
        self._bucket = TokenBucket(max_packets_per_second, max_packets_per_second / 4)
        self.relay_only = relay_only
        self._gatherer = RTCIceGatherer(
            iceServers=list(ice_servers or []),
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
        )
        self._ice = RTCIceTransport(self._gatherer)
        self._certificate = shared_certificate()
        self._dtls = RTCDtlsTransport(self._ice, [self._certificate])
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx_context: Any = None  # the srtp_t inside self._rx / self._tx (see module doc)
        self._tx_context: Any = None
        self._size = _ffi.new("int *")
        self._out = _ffi.new("char[]", MAX_PACKET_SIZE + _TRAILER)
        self._out_view = _ffi.buffer(self._out)
        self._send: Callable[[bytes, Any], None] | None = None
        self._remote_addr: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._original_data_received: Callable[[bytes, int], None] | None = None
        self._tap_protocol: Any = None
        self._stun_path: Callable[[bytes, Any], None] | None = None
        #: This leg's socket in the C pump once :meth:`offload` moved it there.
        self._fast: Any = None
        self.connected = asyncio.Event()
        self._background: set[asyncio.Future[None]] = set()
        self.close_reason: str | None = None

    # Signalling ------------------------------------------------------------------------------------
    async def gather(self, *, controlling: bool = False) -> None:
        """Host candidates on our bind addresses (+ STUN/TURN ones when configured).

        ``controlling`` is the ICE role, fixed here rather than in :meth:`start`: the offerer controls
        (RFC 8445 §6.1.1), and the answerer starts its checks as soon as it has our offer — long before
        its answer reaches us through the homeserver. Answered under aioice's default (controlled), those
        early checks end in a 487 role conflict (§7.3.1.1) after which the peer nominates alone and we
        wait for a nomination that never comes: about half of all calls, by the tie-breakers' draw.
        """
        connection = self._ice._connection
        connection.ice_controlling = controlling
        if self.relay_only:
            candidates = await connection.get_component_candidates(component=1, addresses=[])
        elif self.port_range == (0, 0):
            candidates = await connection.get_component_candidates(
                component=1, addresses=list(self.bind_addresses)
            )
        else:
            # aioice binds host candidates to port 0 only: bind them ourselves in the range, then let it add
            # the relayed ones (TURN) as usual.
            candidates = await self._host_candidates_in_range()
            candidates += await connection.get_component_candidates(component=1, addresses=[])
        connection._local_candidates += candidates
        connection._local_candidates_start = True
        connection._local_candidates_end = True

    async def _host_candidates_in_range(self) -> list[Candidate]:
        """Host candidates (RFC 8445 §5.1.1.1) on our bind addresses, each on a port of ``port_range``, and
        their server-reflexive twins when a STUN server is configured (§5.1.1.2)."""
        connection = self._ice._connection
        loop = asyncio.get_running_loop()
        low, high = self.port_range
        candidates: list[Candidate] = []
        for address in self.bind_addresses:
            sock = PortRange(address, low, high).bind_one()
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection), sock=sock)
            host, port = sock.getsockname()[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=1,
                transport="udp",
                priority=candidate_priority(1, "host"),
                host=host,
                port=port,
                type="host",
            )
            connection._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
            if connection.stun_server and ":" not in host:
                try:
                    async with asyncio.timeout(5):
                        srflx, _ = await server_reflexive_candidate(protocol, connection.stun_server)
                    candidates.append(srflx)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    log.info("STUN query from %s:%d failed: %r", host, port, exc)
        return candidates

    def local_attributes(self, setup: str) -> list[tuple[str, str | None]]:
        """ICE and DTLS attributes for our media section (RFC 8839 §5, RFC 8842 §5)."""
        params = self._gatherer.getLocalParameters()
        attributes: list[tuple[str, str | None]] = [
            ("ice-ufrag", params.usernameFragment),
            ("ice-pwd", params.password),
        ]
        for fingerprint in self._certificate.getFingerprints():
            attributes.append(("fingerprint", f"{fingerprint.algorithm} {fingerprint.value}"))
        attributes.append(("setup", setup))
        for candidate in self._ice._connection.local_candidates:
            attributes.append(("candidate", candidate.to_sdp()))
        attributes.append(("end-of-candidates", None))
        return attributes

    @property
    def default_address(self) -> tuple[str, int]:
        """The address for ``c=``/``m=`` (RFC 8839 §4.2.1.2: the default candidate)."""
        candidate = self._ice._connection.get_default_candidate(1)
        return (candidate.host, candidate.port) if candidate else ("0.0.0.0", 9)

    def start(self, remote: SessionDescription, media: MediaDescription, *, controlling: bool) -> None:
        """Begin ICE then DTLS against the peer's description; completion is reported by ``connected``.

        RFC 8842 §5.3: an ``actpass`` offerer leaves us free; we take ``active`` (DTLS client), as
        browsers do; if the peer says ``active`` we are the DTLS server.
        """
        ufrag = media.get("ice-ufrag") or remote.get("ice-ufrag") or ""
        pwd = media.get("ice-pwd") or remote.get("ice-pwd") or ""
        fingerprints = [
            RTCDtlsFingerprint(algorithm=f.split()[0], value=f.split()[1])
            for f in media.get_all("fingerprint") + remote.get_all("fingerprint")
            if len(f.split()) == 2
        ]
        setup = media.get("setup") or remote.get("setup") or "actpass"
        self._ice._connection.ice_controlling = controlling
        self._dtls._set_role("server" if setup == "active" else "client")
        for line in media.get_all("candidate"):
            self.add_remote_candidate(line)
        if media.has("end-of-candidates"):
            self.add_remote_candidate(None)
        self.state = WebRtcState.CONNECTING
        self._task = asyncio.ensure_future(
            self._connect(RTCIceParameters(usernameFragment=ufrag, password=pwd), fingerprints)
        )

    def add_remote_candidate(self, line: str | None) -> None:
        """A trickled candidate (``candidate:…`` or the bare attribute value), or None for end-of-candidates."""
        connection = self._ice._connection
        if line is None:
            self._spawn(connection.add_remote_candidate(None))
            return
        text = line.strip()
        if text.startswith("a="):
            text = text[2:]
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        try:
            candidate = Candidate.from_sdp(text)
        except (ValueError, IndexError):
            log.info("ignoring unparsable ICE candidate %r", line[:80])
            return
        if candidate.component != 1 or candidate.transport.lower() != "udp":
            return
        self._spawn(connection.add_remote_candidate(candidate))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _connect(self, ice_params: RTCIceParameters, fingerprints: list[RTCDtlsFingerprint]) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ice.on("statechange", self._ice_state_changed)
                await self._ice.start(ice_params)
                if self._ice.state != "completed":
                    self._fail("ICE failed")
                    return
                await self._dtls.start(RTCDtlsParameters(fingerprints=fingerprints))
        except TimeoutError:
            self._fail("ICE/DTLS connect timed out")
            return
        except (ConnectionError, AssertionError) as exc:
            self._fail(f"connect failed: {exc!r}")
            return
        if self._dtls.state != "connected":
            self._fail(f"DTLS {self._dtls.state}")
            return
        self._install_tap()
        self.connected.set()
        if self.on_connected is not None:
            self.on_connected()

    def _install_tap(self) -> None:
        pair = self._ice._connection._nominated[1]
        self.attach_srtp(pair.protocol, pair.remote_addr, self._dtls._rx_srtp, self._dtls._tx_srtp)
        self._dtls.on("statechange", self._dtls_state_changed)

    def attach_srtp(
        self, protocol: Any, remote_addr: tuple[str, int], rx: pylibsrtp.Session, tx: pylibsrtp.Session
    ) -> None:
        """Put the tap in place on ``protocol`` (aioice's socket) with these SRTP sessions.

        Called once DTLS is done; the benchmark calls it directly with keys of its own.
        """
        connection = self._ice._connection
        self.use_srtp(rx, tx)
        self._remote_addr = remote_addr
        self._send = protocol.transport.sendto
        self._original_data_received = connection.data_received
        connection.data_received = self._datagram  # type: ignore[method-assign]
        # Fast path on the nominated socket: hand RTP/RTCP to the tap before aioice tries (and fails,
        # by raising) to parse each one as STUN; everything else takes aioice's usual way.
        aioice_path = protocol.datagram_received
        media_path = self._media
        counters = self.counters

        def stun_path(data: bytes, addr: Any) -> None:
            # aioice's STUN parser raises more than the ValueError it catches (struct.error on a short
            # attribute, found by the media benchmark): a hostile datagram is counted, not a traceback.
            try:
                aioice_path(data, addr)
            except Exception as exc:  # a third-party parser on wire input
                counters.malformed += 1
                log.debug("unparsable datagram from %s: %r", addr, exc)

        self._tap_protocol = protocol
        self._stun_path = stun_path

        def datagram_received(data: bytes, addr: Any) -> None:
            if data and 127 < data[0] < 192:
                media_path(data)
            else:
                stun_path(data, addr)

        protocol.datagram_received = datagram_received
        self.state = WebRtcState.CONNECTED

    def offload(self, pump: Any) -> Any:
        """Hand the nominated socket to the C pump (media/fastpath.py); returns its handle there, or None
        if this leg cannot go (not connected, or a TURN-relayed pair, whose media arrives wrapped in TURN
        framing that only aioice reads).

        The pump gets a duplicate of the socket and the event loop's transport is closed, so exactly one
        reader remains; aioice keeps sending its STUN (consent, RFC 7675) through :class:`_PumpTransport`,
        and everything that is not SRTP comes back to it as before.
        """
        if self._fast is not None:
            return self._fast
        protocol = self._tap_protocol
        if (
            self.state is not WebRtcState.CONNECTED
            or type(protocol) is not StunProtocol
            or self._remote_addr is None
            or self._rx_context is None
            or self._tx_context is None
        ):
            return None
        transport = protocol.transport
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        fd = os.dup(sock.fileno())
        try:
            leg = pump.add_webrtc(
                fd=fd,
                rx_context=int(_ffi.cast("uintptr_t", self._rx_context)),
                tx_context=int(_ffi.cast("uintptr_t", self._tx_context)),
                unprotect=_UNPROTECT_ADDRESS,
                protect=_PROTECT_ADDRESS,
                on_slow=self._stun_path,
                on_rtcp=self._srtcp,
                on_clear=self._clear_rtp,
                rate=self._bucket.rate,
                burst=self._bucket.burst,
            )
        except BaseException:
            os.close(fd)
            raise
        leg.set_remote(self._remote_addr[0], self._remote_addr[1])
        protocol.transport = _PumpTransport(leg, protocol, transport.get_extra_info("sockname"))
        # The loop's transport closes now; our shim reports the real end to aioice when the pump's does.
        protocol.connection_lost = _ignore_connection_lost  # type: ignore[method-assign]
        transport.close()
        self._send = None
        self._fast = leg
        return leg

    def counter_totals(self) -> dict[str, int]:
        """This leg's counters, the C pump's share included."""
        return self.counters.plus(self._fast)

    def use_srtp(self, rx: pylibsrtp.Session | None, tx: pylibsrtp.Session | None) -> None:
        """The SRTP sessions to unprotect and protect with (kept: they own the libsrtp contexts)."""
        self._rx = rx
        self._tx = tx
        self._rx_context = rx._srtp[0] if rx is not None else None
        self._tx_context = tx._srtp[0] if tx is not None else None

    def _ice_state_changed(self) -> None:
        if self._ice.state in ("failed", "closed") and self.state is WebRtcState.CONNECTED:
            self._fail("ICE consent expired" if self._ice.state == "failed" else "ICE closed")

    def _dtls_state_changed(self) -> None:
        if self._dtls.state in ("closed", "failed") and self.state is WebRtcState.CONNECTED:
            # aioice closes the connection itself only when consent expires (RFC 7675); the DTLS reader
            # usually notices before the ICE transport's state does, so name the real cause.
            closing = getattr(self._ice._connection, "_closing", False)
            self._fail("ICE consent expired" if closing else f"DTLS {self._dtls.state}")

    def _fail(self, reason: str) -> None:
        if self.state in (WebRtcState.CLOSED, WebRtcState.FAILED):
            return
        log.info("WebRTC leg ended: %s", reason)
        self.state = WebRtcState.FAILED
        self.close_reason = reason
        self._send = None
        if self._fast is not None:
            self._fast.fast = False
        self.connected.set()
        if self.on_closed is not None:
            self.on_closed(reason)

    # Hot path --------------------------------------------------------------------------------------
    def _datagram(self, data: bytes, component: int) -> None:
        """The tap (see module doc): SRTP/SRTCP handled here, everything else to aiortc."""
        first = data[0] if data else 0
        if not 127 < first < 192:
            assert self._original_data_received is not None
            self._original_data_received(data, component)
            return
        self._media(data)

    def _media(self, data: bytes) -> None:
        """An RTP or RTCP packet (first byte 128-191, RFC 7983 §7; the caller checked): unprotect, count,
        hand on."""
        now = _monotonic()
        if not self._bucket.allow(now):
            self.counters.flood_dropped += 1
            return
        if is_rtcp(data):
            self._srtcp(data, now)
            return
        # In place, in the bytearray the relay will rewrite (libsrtp checks the header and the length).
        packet = bytearray(data)
        size = self._size
        size[0] = len(packet)
        if _srtp_unprotect(self._rx_context, _from_buffer(packet), size):
            self.counters.unauthenticated += 1
            return
        del packet[size[0] :]
        self._clear_rtp(packet, now)

    def _srtcp(self, data: bytes, now: float) -> None:
        """An SRTCP packet that passed the flood bound (from :meth:`_media` or the C pump)."""
        rx = self._rx
        assert rx is not None
        try:
            clear = rx.unprotect_rtcp(data)
        except pylibsrtp.Error:
            self.counters.unauthenticated += 1
            return
        self.counters.rtcp_received += 1
        if self.on_rtcp is not None:
            self.on_rtcp(clear, now)

    def _clear_rtp(self, packet: bytearray, now: float) -> None:
        """An unprotected RTP packet for the Python relay (from :meth:`_media`, or from the C pump when it
        does not relay the packet itself: events, hold, the Python transcoder)."""
        header = parse_rtp(packet)
        if isinstance(header, Malformed):
            self.counters.malformed += 1
            return
        self.counters.rtp_received += 1
        self.on_rtp(packet, header, now)

    def send_rtp(self, packet: bytes | bytearray) -> None:
        send = self._send
        if send is None:
            if self._fast is not None and self.state is WebRtcState.CONNECTED:
                self._fast.send_rtp(packet)
            return
        count = len(packet)
        if count > MAX_PACKET_SIZE:
            self.counters.send_errors += 1
            return
        size = self._size
        size[0] = count
        view = self._out_view
        view[0:count] = packet
        if _srtp_protect(self._tx_context, self._out, size):
            self.counters.send_errors += 1
            return
        send(view[0 : size[0]], self._remote_addr)
        self.counters.sent += 1

    def send_rtcp(self, data: bytes) -> None:
        send = self._send
        if send is None:
            if self._fast is not None and self.state is WebRtcState.CONNECTED:
                send = self._fast.sendto
            else:
                return
        assert self._tx is not None
        with contextlib.suppress(pylibsrtp.Error):
            send(self._tx.protect_rtcp(data), self._remote_addr)

    async def close(self) -> None:
        if self.state is not WebRtcState.FAILED:
            self.state = WebRtcState.CLOSED
        self._send = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._dtls.stop()
        with contextlib.suppress(Exception):
            await self._ice.stop()
        if self._fast is not None:
            self._fast.close()


def _ignore_connection_lost(exc: Exception | None) -> None:
    """The event loop's transport of an offloaded socket closed: not the end of the socket."""


class _PumpTransport(asyncio.DatagramTransport):
    """What aioice's protocol sends through once its socket is in the C pump (STUN requests and answers)."""

    def __init__(self, leg: Any, protocol: StunProtocol, sockname: Any) -> None:
        super().__init__()
        self._leg = leg
        self._protocol = protocol
        self._sockname = sockname
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closing:
            self._leg.sendto(bytes(data), addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._sockname if name == "sockname" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._leg.close()
        # As a transport would: the protocol learns of the end on the next loop turn.
        asyncio.get_running_loop().call_soon(StunProtocol.connection_lost, self._protocol, None)

    def abort(self) -> None:
        self.close()
