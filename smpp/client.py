"""asyncio edge for `EsmeSession`: TCP/TLS, timers, reconnect, and the store-then-ack rule.

This is the only place with sockets and the event loop. `SmppClient` keeps one bind
(transceiver) or a transmitter/receiver pair to one SMSC up: it reconnects with jittered
exponential back-off (full jitter, so a fleet does not reconnect in lock-step after an
SMSC restart), exposes `submit()` as an awaitable, and calls the application's inbound
handler for every deliver_sm/data_sm.

The deliver_sm_resp is sent by the client *after* the handler's coroutine returns, with
the status it returns; the application never holds a ticket, so it cannot acknowledge
a message before storing it. If the handler raises, the SMSC gets ESME_RX_T_APPN
(temporary application error) and will redeliver.

A submit whose connection dies raises `ConnectionLostError`; `possible_duplicate` tells
whether the PDU had been written (the SMSC may have accepted it and its response was
lost). The caller (the `Gateway`) resubmits, on this bind after reconnecting or on
another one, and counts those duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from smpp import pdu as P
from smpp.encoding import DefaultAlphabet
from smpp.pdu import Status
from smpp.session import (
    BindFailed,
    BindMode,
    Bound,
    ConnectionDead,
    DeliverReceived,
    EsmeSession,
    SessionConfig,
    State,
    SubmitDone,
    SubmitFailed,
    Unbound,
)

log = logging.getLogger(__name__)

# Called for every inbound deliver_sm/data_sm; returns the command_status to answer with
# once the message is durably stored (normally ESME_ROK).
DeliverHandler = Callable[["SmppClient", P.ShortMessage | P.DataSm], Awaitable[int]]


class SubmitError(Exception):
    """The SMSC refused a submit_sm (other than throttling, which the session retries)."""

    def __init__(self, status: int, temporary: bool) -> None:
        super().__init__(f"submit_sm refused: {P.status_name(status)}")
        self.status = status
        self.temporary = temporary


class ConnectionLostError(Exception):
    """The bind went away before the submit_sm was answered."""

    def __init__(self, possible_duplicate: bool) -> None:
        super().__init__("SMPP connection lost before submit_sm_resp")
        self.possible_duplicate = possible_duplicate


class NotBoundError(Exception):
    """No transmitting bind is up on this client right now."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    message_id: str
    possible_duplicate: bool


@dataclass(frozen=True)
class SmscConfig:
    """One SMSC account: where, how to bind, and how texts are cut for it."""

    name: str
    host: str
    port: int
    session: SessionConfig
    pair: bool = False  # a transmitter + receiver pair instead of one transceiver bind
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    server_hostname: str | None = None
    connect_timeout: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    default_alphabet: DefaultAlphabet = DefaultAlphabet.GSM7  # meaning of data_coding 0
    # Inbound data_coding values this SMSC misuses, read as another value: e.g. {1: 0} for
    # SMSCs (node-smpp among them) that label GSM 03.38 septets as data_coding 1 (IA5).
    data_coding_aliases: Mapping[int, int] = field(default_factory=dict, compare=False)


@dataclass(slots=True)
class ClientStats:
    connects: int = 0
    bind_failures: int = 0
    connection_losses: int = 0
    possible_duplicates: int = 0
    deliver_handler_errors: int = 0


class _Connection(asyncio.Protocol):
    """One TCP connection driving one EsmeSession."""

    def __init__(self, client: SmppClient, config: SessionConfig) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.session = EsmeSession(config, self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.bound = asyncio.Event()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.bind_failed: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.session.connection_made(self.loop.time())
        self._after()

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self.loop.time())
        self._after()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.connection_lost()
        self.bound.clear()
        if self._timer is not None:
            self._timer.cancel()
        for u in self.session.take_unfinished():
            fut = u.token
            assert isinstance(fut, asyncio.Future)
            if not fut.done():
                fut.set_exception(ConnectionLostError(u.written))
        if not self.closed.done():
            self.closed.set_result(None)

    # driving the session

    def submit(self, pdu: P.ShortMessage) -> asyncio.Future[SubmitResult]:
        fut: asyncio.Future[SubmitResult] = self.loop.create_future()
        self.session.submit(pdu, fut, self.loop.time())
        self._after()
        return fut

    def unbind(self) -> None:
        self.session.unbind(self.loop.time())
        self._after()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self.session.handle_timer(self.loop.time())
        self._after()

    def _after(self) -> None:
        """Process events, flush output, re-arm the timer: after every input to the session."""
        s = self.session
        while (ev := s.next_event()) is not None:
            if isinstance(ev, SubmitDone):
                fut = ev.token
                assert isinstance(fut, asyncio.Future)
                if not fut.done():
                    fut.set_result(SubmitResult(ev.message_id, ev.possible_duplicate))
            elif isinstance(ev, SubmitFailed):
                fut = ev.token
                assert isinstance(fut, asyncio.Future)
                if not fut.done():
                    fut.set_exception(SubmitError(ev.status, ev.temporary))
            elif isinstance(ev, DeliverReceived):
                task = self.loop.create_task(self._deliver(ev))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(ev, Bound):
                log.info("%s: bound (%s) to %s", self.client.config.name, s.config.mode.name, ev.system_id)
                self.bound.set()
            elif isinstance(ev, BindFailed):
                log.error("%s: bind refused: %s", self.client.config.name, P.status_name(ev.status))
                self.bind_failed = ev.status
                self._close()
            elif isinstance(ev, Unbound | ConnectionDead):
                if isinstance(ev, ConnectionDead):
                    log.warning("%s: connection dead: %s", self.client.config.name, ev.reason)
                self.bound.clear()
                self._close(abort=isinstance(ev, ConnectionDead))
        data = s.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
        when = s.get_timer()
        if when == self._timer_when:
            return  # the armed timer is still right: saves a cancel + call_at per PDU
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _close(self, abort: bool = False) -> None:
        if self.transport is not None:
            data = self.session.data_to_send()
            if data and not abort and not self.transport.is_closing():
                self.transport.write(data)
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    async def _deliver(self, ev: DeliverReceived) -> None:
        try:
            status = await self.client.on_deliver(self.client, ev.pdu)
        except Exception:
            self.client.stats.deliver_handler_errors += 1
            log.exception("%s: inbound handler failed; answering ESME_RX_T_APPN", self.client.config.name)
            status = Status.ESME_RX_T_APPN
        if self.session.state is State.CLOSED:
            return  # the SMSC will redeliver; the stored copy makes that a duplicate we ignore
        self.session.respond(ev.ticket, status)
        self._after()


class SmppClient:
    """Keeps one SMSC account bound and offers submit/receive over it."""

    def __init__(
        self,
        config: SmscConfig,
        on_deliver: DeliverHandler,
        *,
        rng: Callable[[], float] = random.random,
        on_bind_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._on_bind_change = on_bind_change
        self.on_deliver = on_deliver
        self.stats = ClientStats()
        self._rng = rng
        self._tx: _Connection | None = None
        self._rx: _Connection | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._bound_changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_bound(self) -> bool:
        """True when a bind that can submit is up."""
        c = self._tx
        return c is not None and c.bound.is_set() and c.session.can_submit

    async def start(self) -> None:
        """Start connecting (returns at once; use `wait_bound` to wait for the bind)."""
        if self._loops:
            return
        base = self.config.session
        if self.config.pair:
            modes = [BindMode.TRANSMITTER, BindMode.RECEIVER]
        else:
            modes = [base.mode]
        for mode in modes:
            self._loops.append(asyncio.create_task(self._run(replace(base, mode=mode))))

    async def wait_bound(self, within: float | None = None) -> bool:
        async def _wait() -> None:
            while not self.is_bound:
                self._bound_changed.clear()
                await self._bound_changed.wait()

        try:
            await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            return False
        return True

    async def submit(self, pdu: P.ShortMessage) -> SubmitResult:
        """Submit one PDU and wait for its submit_sm_resp.

        Raises NotBoundError (nothing sent), SubmitError, ConnectionLostError.
        """
        c = self._tx
        if c is None or not self.is_bound:
            raise NotBoundError(self.config.name)
        try:
            return await c.submit(pdu)
        except ConnectionLostError as e:
            if e.possible_duplicate:
                self.stats.possible_duplicates += 1
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful shutdown: let outstanding submits finish, unbind, close."""
        self._stopping = True
        conns = [c for c in (self._tx, self._rx) if c is not None]
        for c in conns:
            if c.transport is not None and not c.transport.is_closing():
                c.unbind()
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.closed) for c in conns], timeout=grace)
        for c in conns:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.abort()
        # Inbound handlers still waiting (for a message's missing parts) can no longer
        # answer anything; the SMSC redelivers what was not acknowledged.
        handlers = [t for c in conns for t in c._tasks]
        for t in self._loops + handlers:
            t.cancel()
        for t in self._loops + handlers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops.clear()

    def _notify(self) -> None:
        self._bound_changed.set()
        if self._on_bind_change is not None:
            self._on_bind_change()

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential back-off: uniform in [0, min(max, initial·2^attempt)]."""
        cap = min(self.config.reconnect_max, self.config.reconnect_initial * (2**attempt))
        return max(0.05, cap * self._rng())

    async def _run(self, cfg: SessionConfig) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            conn = _Connection(self, cfg)
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda conn=conn: conn,
                        self.config.host,
                        self.config.port,
                        ssl=self.config.tls,
                        server_hostname=self.config.server_hostname if self.config.tls else None,
                    ),
                    self.config.connect_timeout,
                )
            except (OSError, TimeoutError) as e:
                log.warning("%s: connect failed: %s", self.config.name, e)
            else:
                self.stats.connects += 1
                if cfg.mode is BindMode.RECEIVER:
                    self._rx = conn
                else:
                    self._tx = conn
                bound_wait: asyncio.Future[Any] = asyncio.ensure_future(conn.bound.wait())
                closed: asyncio.Future[Any] = conn.closed
                await asyncio.wait([bound_wait, closed], return_when=asyncio.FIRST_COMPLETED)
                bound_wait.cancel()
                if conn.bound.is_set():
                    attempt = 0
                    self._notify()
                await conn.closed
                self._notify()
                if conn.bind_failed is not None:
                    self.stats.bind_failures += 1
                else:
                    self.stats.connection_losses += 1
            if self._stopping:
                break
            delay = self._backoff(attempt)
            attempt += 1
            log.info("%s: reconnecting in %.2fs", self.config.name, delay)
            await asyncio.sleep(delay)
