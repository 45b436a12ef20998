"""The asyncio facade the bridge uses: a :class:`UserAgent` that places and receives :class:`Call`\\ s.

It wires :class:`~sip.useragent.UserAgentCore` (all SIP logic, sans-I/O) to
:class:`~sip.transport.SipEndpoint` (sockets) and turns core events into one ``asyncio.Queue`` per call::

    ua = UserAgent(UserAgentConfig("127.0.0.1", 0), on_incoming=handle)   # port 0: pick a free port
    await ua.start()
    call = await ua.call("sip:+15551234@trunk.example.com", "sip:bridge@example.com", sdp_offer)
    async for event in call:            # CallProgress(180/183 + early SDP), CallAnswered, OfferReceived,
        ...                             # OfferAnswered, DtmfReceived, CallEnded (always last)
    call.hangup()

SDP is opaque here (bytes; ``str`` accepted and encoded as UTF-8): the ``sdp`` package negotiates it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from sip.dialog import Dialog
from sip.errors import CallFailed, SipError
from sip.headers import NameAddr
from sip.registration import Registration, TrunkMonitor
from sip.transport import Resolver, SipEndpoint
from sip.useragent import (
    CallAnswered,
    CallEnded,
    Event,
    IncomingCall,
    InviteSession,
    RegistrationStatus,
    RequestFailed,
    SessionState,
    Target,
    TrunkStatus,
    UserAgentConfig,
    UserAgentCore,
)

log = logging.getLogger(__name__)

Sdp = bytes | str


def _b(sdp: Sdp | None) -> bytes:
    if sdp is None:
        return b""
    return sdp.encode() if isinstance(sdp, str) else sdp


class Call:
    """One call, either direction. Iterate it (or ``await call.next_event()``) for its events; the
    stream ends after :class:`~sip.useragent.CallEnded`. Commands take effect at once (sent before they
    return); they raise :class:`~sip.errors.DialogError` when the call's state does not allow them."""

    def __init__(self, ua: UserAgent, session: InviteSession) -> None:
        self._ua = ua
        self.session = session
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        #: the answer SDP; raises CallFailed if the call ends first
        self.answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Nobody has to await it: mark a failure as retrieved so asyncio does not warn at collection.
        self.answered.add_done_callback(lambda f: f.cancelled() or f.exception())
        session.user_data = self

    # What the bridge reads about the call.
    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def incoming(self) -> bool:
        return not self.session.is_uac

    @property
    def from_(self) -> NameAddr:
        return self.session.from_

    @property
    def to(self) -> NameAddr:
        return self.session.to

    @property
    def request_uri(self) -> str:
        return self.session.request_uri

    @property
    def p_asserted_identity(self) -> list[NameAddr]:
        return self.session.p_asserted_identity

    @property
    def peer(self) -> Target:
        """Where the INVITE came from (incoming) or was first sent to (outgoing): which trunk this is."""
        return self.session.target

    @property
    def remote_sdp(self) -> bytes:
        """The peer's latest session description (offer of an incoming call, answer of an outgoing)."""
        return self.session.remote_body

    @property
    def state(self) -> SessionState:
        return self.session.state

    def dialog_snapshot(self) -> dict[str, Any] | None:
        """The confirmed dialog's state (:meth:`sip.dialog.Dialog.snapshot`), to end it after a restart."""
        dialog = self.session.dialog
        return dialog.snapshot() if dialog is not None else None

    def header(self, name: str) -> str | None:
        """A header of the initial INVITE (e.g. ``Diversion``, ``X-Carrier-…``)."""
        return self.session.invite.headers.get(name)

    # Commands.
    def ring(self, early_sdp: Sdp | None = None) -> None:
        """180 Ringing, or 183 Session Progress when ``early_sdp`` is given (early media)."""
        body = _b(early_sdp)
        self._do(lambda now: self._ua.core.ring(self.session, now, body, 183 if body else 180))

    def answer(self, sdp: Sdp) -> None:
        self._do(lambda now: self._ua.core.answer(self.session, _b(sdp), now))

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        self._do(lambda now: self._ua.core.reject(self.session, status, now, reason))

    def hangup(self, cause: str | None = None) -> None:
        """CANCEL, BYE or 603, whichever fits the state (see ``UserAgentCore.hangup``); ``cause`` is sent
        as the Reason header, e.g. ``'Q.850;cause=16;text="Normal call clearing"'``."""
        self._do(lambda now: self._ua.core.hangup(self.session, now, cause))

    def reinvite(self, sdp: Sdp) -> None:
        """New offer (hold with ``a=sendonly``, unhold, codec change); the result is OfferAnswered."""
        self._do(lambda now: self._ua.core.reinvite(self.session, _b(sdp), now))

    def accept_offer(self, sdp: Sdp) -> None:
        """Answer the peer's re-INVITE/UPDATE offer (after OfferReceived)."""
        self._do(lambda now: self._ua.core.accept_offer(self.session, _b(sdp), now))

    def reject_offer(self, status: int = 488) -> None:
        self._do(lambda now: self._ua.core.reject_offer(self.session, now, status))

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        """One digit as SIP INFO ``application/dtmf-relay`` (RTP events are the media package's job)."""
        self._do(lambda now: self._ua.core.send_dtmf(self.session, digit, now, duration_ms))

    def _do(self, command: Callable[[float], None]) -> None:
        command(self._ua.endpoint.now)
        self._ua.endpoint.pump()

    # Events.
    async def next_event(self) -> Event:
        """The next event; wrap in ``asyncio.timeout`` to bound the wait."""
        return await self.events.get()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, CallEnded):
                return

    def _deliver(self, event: Event) -> None:
        self.events.put_nowait(event)
        if isinstance(event, CallAnswered) and not self.answered.done():
            self.answered.set_result(event.body)
        if isinstance(event, CallEnded):
            if not self.ended.done():
                self.ended.set_result(event)
            if not self.answered.done():
                self.answered.set_exception(CallFailed(event.status, event.reason))

    def __repr__(self) -> str:
        return f"<Call {'in' if self.incoming else 'out'} {self.call_id} {self.state.value}>"


IncomingHandler = Callable[[Call], Awaitable[None] | None]


class UserAgent:
    """A SIP user agent on UDP (and optionally TCP/TLS) sockets.

    ``on_incoming`` is called (or awaited, as a task) for each new incoming call; without it, incoming
    calls wait in :attr:`incoming`. ``on_event`` sees events not tied to a call (TrunkStatus,
    RegistrationStatus, RequestFailed).
    """

    def __init__(
        self,
        config: UserAgentConfig,
        on_incoming: IncomingHandler | None = None,
        on_event: Callable[[Event], None] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.config = config
        self.on_incoming = on_incoming
        self.on_event = on_event
        self.resolver = resolver
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self.core: UserAgentCore
        self.endpoint: SipEndpoint
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        udp: bool = True,
        tcp: bool = False,
        tls: ssl.SSLContext | None = None,
        tls_port: int = 0,
        tls_client: ssl.SSLContext | None = None,
        bind_host: str | None = None,
    ) -> tuple[str, int]:
        """Bind sockets and return the (host, port) advertised in Via/Contact.

        Port 0 picks a free one; TCP shares the UDP port; TLS listens on ``tls_port`` and is advertised
        when ``config.transport == "TLS"``. ``bind_host`` (e.g. ``"0.0.0.0"`` in a container) is where
        the sockets listen; ``config.local_host`` stays what peers are told to reach.
        """
        config = self.config
        bind = bind_host or config.local_host
        self.core = UserAgentCore(config)
        self.endpoint = SipEndpoint(self.core, self._dispatch, self.resolver, tls_client)
        port = config.local_port
        if udp:
            _, port = await self.endpoint.listen_udp(bind, config.local_port)
        if tcp:
            _, port = await self.endpoint.listen_tcp(bind, port)
        if tls is not None:
            _, bound = await self.endpoint.listen_tcp(bind, tls_port, tls)
            if config.transport == "TLS":
                port = bound  # Via and Contact advertise the TLS listener
        if port != config.local_port:
            # Rebuild the core so Via/Contact carry the bound port.
            self.config = replace(config, local_port=port)
            self.core = UserAgentCore(self.config)
            self.endpoint.core = self.core
        return self.config.local_host, port

    @property
    def address(self) -> tuple[str, int]:
        return self.config.local_host, self.config.local_port

    async def call(
        self,
        to: str,
        from_: str,
        sdp: Sdp,
        headers: list[tuple[str, str]] | None = None,
        request_uri: str | None = None,
    ) -> Call:
        """Send an INVITE with ``sdp`` as the offer; returns at once with the :class:`Call`."""
        session = self.core.invite(
            to, from_, _b(sdp), self.endpoint.now, request_uri=request_uri, headers=headers
        )
        call = Call(self, session)
        self.endpoint.pump()
        return call

    def register(self, registrar: str, aor: str, expires: int = 3600) -> Registration:
        """Register ``aor`` (e.g. ``"<sip:user@carrier.example>"``) at ``registrar`` (a SIP URI) and keep it
        refreshed; outcomes arrive as RegistrationStatus at ``on_event``. ``.stop(ua.endpoint.now)``
        unregisters (then call ``ua.endpoint.pump()``)."""
        reg = Registration(self.core, registrar, aor, expires)
        reg.start(self.endpoint.now)
        self.endpoint.pump()
        return reg

    def monitor(self, uri: str, from_: str | None = None, interval: float = 30.0) -> TrunkMonitor:
        """OPTIONS-ping ``uri`` every ``interval`` s; TrunkStatus(up/down) changes arrive at ``on_event``."""
        mon = TrunkMonitor(
            self.core, uri, from_ or f"<sip:{self.config.user}@{self.config.sent_by}>", interval
        )
        mon.start(self.endpoint.now)
        self.endpoint.pump()
        return mon

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, IncomingCall):
            call = Call(self, event.session)
            if self.on_incoming is None:
                self.incoming.put_nowait(call)
                return
            result = self.on_incoming(call)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        session = getattr(event, "session", None)
        if isinstance(session, InviteSession) and isinstance(session.user_data, Call):
            session.user_data._deliver(event)
            return
        if isinstance(event, TrunkStatus | RegistrationStatus | RequestFailed) and self.on_event is not None:
            self.on_event(event)

    def end_stale_dialog(self, snapshot: dict[str, Any], cause: str | None = None) -> None:
        """BYE in a dialog an earlier process left up (from ``Call.dialog_snapshot()``)."""
        self.core.end_stale_dialog(Dialog.restore(snapshot), self.endpoint.now, cause)
        self.endpoint.pump()

    def active_calls(self) -> list[Call]:
        """Calls not yet ended (either direction)."""
        sessions = {*self.core._dialogs.values(), *self.core._calls.values()}
        return [
            s.user_data
            for s in sessions
            if isinstance(s.user_data, Call) and s.state is not SessionState.TERMINATED
        ]

    async def close(self, hang_up: bool = True) -> None:
        """Hang up every active call (BYE/CANCEL/603 go out before the sockets close), then close."""
        if hang_up and hasattr(self, "endpoint"):
            for call in self.active_calls():
                try:
                    call.hangup()
                except SipError as exc:
                    log.info("could not hang up %s on close: %s", call, exc)
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close()
