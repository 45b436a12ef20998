"""The user agent core (RFC 3261 §8 UAC/UAS behaviour, §13-§15 INVITE sessions) without I/O.

:class:`UserAgentCore` is fed datagrams/stream messages and time, and asked for output, timers and
events, like aioquic's ``QuicConnection``::

    core.receive(data, source, now)          # bytes from the transport edge
    core.handle_timer(now)                   # when core.get_timer() is due
    for data, target in core.take_output():  # bytes to send (the edge resolves names, RFC 3263)
    event = core.next_event()                # IncomingCall, CallProgress, CallAnswered, CallEnded, …

Calls are :class:`InviteSession` objects (one INVITE-initiated dialog, either role); the application
drives them through the core (``invite``, ``ring``, ``answer``, ``reject``, ``hangup``, ``reinvite``,
``accept_offer``, ``send_dtmf``). Bodies (SDP) are opaque bytes here.

Everything that reaches :meth:`UserAgentCore.receive` is untrusted: parse errors are answered with 400
when a response can be formed and are otherwise dropped; both are logged once.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from sip.auth import AllowList, Credentials, DigestClient, DigestServer, parse_challenge
from sip.dialog import Dialog, DialogState, glare_retry_delay
from sip.errors import DialogError, SipError, SipParseError
from sip.headers import NameAddr, parse_int
from sip.message import Request, Response, make_response, parse_message
from sip.sessiontimer import (
    MIN_SE_FLOOR,
    expire_after,
    refresh_after,
    session_expires_of,
    supports_timer,
)
from sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    TimerConfig,
    Transaction,
    build_cancel,
    client_key,
    new_branch,
    server_key,
)
from sip.uri import SipUri, parse_uri

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
DTMF_RELAY = "application/dtmf-relay"


def new_token() -> str:
    """Tags and Call-IDs: 64 fresh random bits each (§19.3 asks for at least 32). Not a counter: a
    guessable Call-ID and tags would let an off-path sender forge a BYE for someone else's call."""
    return os.urandom(8).hex()


class Target(NamedTuple):
    """Where a message goes or came from. ``host`` may be a name (the edge resolves it per RFC 3263)
    and ``port`` None (SRV, then 5060/5061)."""

    transport: str
    host: str
    port: int | None


RELIABLE = frozenset(("TCP", "TLS"))


# ---------------------------------------------------------------------------------------------- events
@dataclass(slots=True)
class Event:
    """Base of everything :meth:`UserAgentCore.next_event` returns."""


@dataclass(slots=True)
class IncomingCall(Event):
    """A new INVITE (§13.3). Answer with ``ring``/``answer``/``reject``; ``session.invite`` is the request."""

    session: InviteSession


@dataclass(slots=True)
class CallProgress(Event):
    """A provisional response (> 100) to our INVITE: 180 Ringing, 183 Session Progress (early media)."""

    session: InviteSession
    status: int
    reason: str
    body: bytes
    content_type: str | None


@dataclass(slots=True)
class CallAnswered(Event):
    """The 2xx to our INVITE; the ACK has been sent. ``body`` is the answer SDP."""

    session: InviteSession
    body: bytes
    content_type: str | None


@dataclass(slots=True)
class CallConfirmed(Event):
    """The ACK for our 2xx arrived (UAS side); media can be considered established. ``body`` is the
    answer SDP when the INVITE had no offer (late offer: our 2xx carried the offer, RFC 3261 §13.2.1)."""

    session: InviteSession
    body: bytes = b""


@dataclass(slots=True)
class CallEnded(Event):
    """The session is over: a final error response, CANCEL, BYE from either side, or a timeout.

    ``status`` is the SIP status that ended it when there is one (486, 487, 408 …), ``reason`` a phrase,
    ``remote`` whether the peer ended it. ``cause`` is the peer's ``Reason`` header (RFC 3326, e.g.
    ``Q.850;cause=16;text="Normal call clearing"``) on its BYE, CANCEL or final response, if any.
    """

    session: InviteSession
    status: int | None
    reason: str
    remote: bool
    cause: str | None = None


@dataclass(slots=True)
class OfferReceived(Event):
    """A re-INVITE or UPDATE with a new offer (hold, codec change). Reply with ``accept_offer`` or
    ``reject_offer``. An empty body asks us to make an offer (in the 2xx)."""

    session: InviteSession
    method: str
    body: bytes
    content_type: str | None


@dataclass(slots=True)
class OfferAnswered(Event):
    """The outcome of our re-INVITE: 2xx with the answer ``body``, or an error ``status`` (the previous
    session description stays in force, §14.1)."""

    session: InviteSession
    status: int
    body: bytes


@dataclass(slots=True)
class DtmfReceived(Event):
    """A digit in SIP INFO (``application/dtmf-relay`` or ``application/dtmf``)."""

    session: InviteSession
    digit: str
    duration_ms: int


@dataclass(slots=True)
class RequestFailed(Event):
    """A stand-alone request (OPTIONS, REGISTER, INFO) got a final response or timed out (status 408)."""

    method: str
    status: int
    response: Response | None


@dataclass(slots=True)
class TargetUnreachable(Event):
    """A request to ``target`` timed out (RFC 3263 §4.3): the edge moves the address it used to the
    back of that name's list, so the next request tries the next server."""

    target: Target


@dataclass(slots=True)
class TrunkStatus(Event):
    """OPTIONS keepalive result changed: ``up`` after a response, down after a timeout."""

    target: Target
    up: bool


@dataclass(slots=True)
class RegistrationStatus(Event):
    """REGISTER outcome; ``expires`` as granted by the registrar (0 when not registered)."""

    registered: bool
    status: int
    expires: int


# --------------------------------------------------------------------------------------------- session
class SessionState(enum.Enum):
    CALLING = "calling"  # UAC, INVITE sent
    EARLY = "early"  # UAC, provisional received
    INCOMING = "incoming"  # UAS, waiting for the application
    CONFIRMED = "confirmed"  # 2xx sent or received
    TERMINATED = "terminated"


class InviteSession:
    """One call: the INVITE, its dialog, and the re-INVITE/UPDATE in flight either way."""

    __slots__ = (
        "_ack",
        "_ack_target",
        "answer_timer",
        "answered_offer",
        "bye_pending",
        "cancel_requested",
        "cancel_sent",
        "dialog",
        "dialog_keys",
        "end_reported",
        "hangup_cause",
        "invite",
        "invite_txn",
        "is_uac",
        "local_body",
        "local_tag",
        "offer_in",
        "peer_allow",
        "refresher_us",
        "refreshing",
        "reinvite_body",
        "reinvite_out",
        "reinvite_retry",
        "remote_body",
        "se",
        "st_timer",
        "state",
        "target",
        "user_data",
    )

    def __init__(self, invite: Request, is_uac: bool, local_tag: str, target: Target) -> None:
        #: the INVITE as sent (UAC; replaced when re-sent with credentials) or as received (UAS)
        self.invite = invite
        self.is_uac = is_uac
        self.local_tag = local_tag
        self.target = target
        self.state = SessionState.CALLING if is_uac else SessionState.INCOMING
        self.dialog: Dialog | None = None
        self.dialog_keys: list[tuple[str, str, str]] = []
        #: UAS hung up before the ACK for its 2xx: BYE waits for the ACK or its timeout (§15)
        self.bye_pending = False
        self.invite_txn: Transaction | None = None
        self.cancel_requested = False
        self.cancel_sent = False
        self.end_reported = False
        #: Reason header value (RFC 3326) our BYE/CANCEL carries, e.g. 'Q.850;cause=16'
        self.hangup_cause: str | None = None
        #: in-flight re-INVITE we sent / offer (re-INVITE or UPDATE) we must answer
        self.reinvite_out: ClientTransaction | None = None
        self.offer_in: ServerTransaction | None = None
        self.answered_offer: InviteServerTransaction | None = None
        #: UAS: rejects the call with 480 if the application neither answers nor rejects it in time
        self.answer_timer: Timer | None = None
        self.reinvite_body: bytes = b""
        self.reinvite_retry: Timer | None = None
        self.remote_body: bytes = invite.body if not is_uac else b""
        #: our latest session description (re-sent by session-timer refreshes)
        self.local_body: bytes = invite.body if is_uac else b""
        #: RFC 4028: negotiated interval, whether we refresh, the armed timer, refresh in flight
        self.se: int | None = None
        self.refresher_us = False
        self.st_timer: Timer | None = None
        self.refreshing = False
        #: Allow of the peer's 2xx (UAC side), to pick UPDATE for refreshes
        self.peer_allow: list[str] = []
        self._ack: bytes | None = None
        self._ack_target: Target | None = None
        #: free for the application (the facade keeps its Call object here)
        self.user_data: object = None

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def from_(self) -> NameAddr:
        return self.invite.from_

    @property
    def to(self) -> NameAddr:
        return self.invite.to

    @property
    def request_uri(self) -> str:
        return self.invite.uri

    @property
    def p_asserted_identity(self) -> list[NameAddr]:
        """Identities asserted by a trusted trunk (RFC 3325); empty when absent or unreadable."""
        out: list[NameAddr] = []
        for value in self.invite.headers.get_all("P-Asserted-Identity"):
            try:
                out.append(NameAddr.parse(value))
            except SipParseError:
                continue
        return out

    def __repr__(self) -> str:
        role = "uac" if self.is_uac else "uas"
        return f"<InviteSession {role} {self.call_id} {self.state.value}>"


class Timer:
    """A one-shot callback at a point in time, kept in the core's heap."""

    __slots__ = ("_core", "callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[float], None], core: UserAgentCore) -> None:
        self.deadline: float | None = deadline
        self.callback = callback
        self._core = core

    def get_timer(self) -> float | None:
        return self.deadline

    def cancel(self) -> None:
        if self.deadline is not None:
            self.deadline = None
            self._core._arm(self)  # drops it from the armed set at once (no wait for its deadline)


# ------------------------------------------------------------------------------------------------ core
@dataclass(slots=True)
class UserAgentConfig:
    """Everything the core needs to know about itself and its peers.

    ``local_host``/``local_port`` go into Via sent-by and Contact (the address peers reach us at).
    ``outbound_proxy`` (RFC 3261 §8.1.2) receives every out-of-dialog request when set.
    ``digest_server`` challenges inbound INVITEs (trunks that must authenticate to us);
    ``allow_list`` refuses requests from other source addresses with 403.
    """

    local_host: str
    local_port: int
    transport: str = "UDP"
    user: str = "telebridge"
    user_agent: str = "telebridge"
    outbound_proxy: Target | None = None
    timers: TimerConfig = field(default_factory=TimerConfig)
    credentials: list[Credentials] = field(default_factory=list)
    allow_list: AllowList | None = None
    digest_server: DigestServer | None = None
    max_auth_attempts: int = 3
    #: put the address peers see (RFC 3581 received/rport) into Contact once learned (behind NAT)
    contact_from_observed: bool = False
    #: RFC 4028 session interval we ask for / grant (None: no session timers); our Min-SE
    session_expires: int | None = 1800
    min_se: int = MIN_SE_FLOOR
    #: also run a session timer (refreshing it ourselves) for callers that do not support timers
    impose_session_timer: bool = False
    #: seconds an incoming call may wait for answer()/reject() before we send 480 (None: forever)
    answer_timeout: float | None = 300.0

    @property
    def sent_by(self) -> str:
        host = self.local_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.local_port}"


class UserAgentCore:
    """The sans-I/O SIP user agent; see the module docstring for the calling convention."""

    def __init__(self, config: UserAgentConfig) -> None:
        self.config = config
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        #: (Call-ID, From tag, CSeq) → server transaction key, for merged-request detection (§8.2.2.2)
        self._merge: dict[tuple[str, str, int, str], tuple[str, ...]] = {}
        self._dialogs: dict[tuple[str, str, str], InviteSession] = {}
        #: UAC sessions by (Call-ID, local tag) before a dialog exists, for late 2xx
        self._calls: dict[tuple[str, str], InviteSession] = {}
        self._heap: list[tuple[float, int, object]] = []
        self._stale = 0
        self._armed: dict[object, float] = {}
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Target]] = []
        self._events: deque[Event] = deque()
        self._auth = DigestClient(list(config.credentials))
        self.contact = f"<sip:{config.user}@{config.sent_by}{self._transport_param(config.transport)}>"
        self.stats = {"received": 0, "parse_errors": 0, "sent": 0}
        #: our address as the last peer saw it (RFC 3581 received/rport of our own requests' Via)
        self.observed_address: tuple[str, int] | None = None

    # ------------------------------------------------------------------ sans-I/O interface
    def take_output(self) -> list[tuple[bytes, Target]]:
        out = self._out
        self._out = []
        self.stats["sent"] += len(out)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        armed = self._armed
        while self._heap:
            deadline, _, obj = self._heap[0]
            if armed.get(obj) == deadline:
                return deadline
            heapq.heappop(self._heap)
            self._stale = max(0, self._stale - 1)
        return None

    def handle_timer(self, now: float) -> None:
        # self._heap is looked up on every turn: _arm() may rebuild it while timers run.
        armed = self._armed
        while self._heap and self._heap[0][0] <= now:
            deadline, _, obj = heapq.heappop(self._heap)
            if armed.get(obj) != deadline:
                self._stale = max(0, self._stale - 1)
                continue
            del armed[obj]
            try:
                if isinstance(obj, Transaction):
                    obj.handle_timer(now)
                    self._service(obj, now)
                elif isinstance(obj, Timer):
                    if obj.deadline is not None and obj.deadline <= now:
                        obj.deadline = None
                        obj.callback(now)
                    else:
                        self._arm(obj)
            except SipError as exc:  # one timer's failure must not stop the others
                log.warning("timer action failed: %s", exc)

    def transport_error(self, target: Target, now: float) -> None:
        """The edge could not resolve or connect to ``target`` (§17.1.4, §18.4): every client
        transaction headed there fails now instead of waiting for Timer B/F."""
        for txn in list(self._client.values()):
            if txn.destination == target and not txn.terminated:
                txn.transport_error()
                self._service(txn, now)

    def call_at(self, deadline: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(deadline, callback, self)
        self._arm(timer)
        return timer

    def receive(self, data: bytes, source: Target, now: float) -> None:
        """Feed one datagram (UDP) or one framed message (TCP/TLS) from ``source``."""
        self.stats["received"] += 1
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.stats["parse_errors"] += 1
            partial = exc.partial
            if partial is not None and partial.method != "ACK":
                try:
                    self._stamp_via(partial, source)
                    resp = make_response(partial, exc.status, exc.reason)
                    self._out.append((resp.encode(), self._response_target(partial, source)))
                    log.info(
                        "answered malformed %s from %s with %d: %s",
                        partial.method,
                        source,
                        exc.status,
                        exc.reason,
                    )
                    return
                except SipParseError:
                    pass
            log.info("dropped malformed message from %s: %s", source, exc.reason)
            return
        try:
            if isinstance(msg, Request):
                self._receive_request(msg, source, now)
            else:
                self._receive_response(msg, now)
        except SipError as exc:
            log.warning("error handling message from %s: %s", source, exc)

    # ------------------------------------------------------------------ timers and output
    def _arm(self, obj: Transaction | Timer) -> None:
        """Keep ``obj``'s next deadline in the heap. Superseded entries stay in the heap (lazy deletion)
        and are counted; when they outnumber the live ones the heap is rebuilt, so cancelled long timers
        (session timers, 32 s transaction timers) never pile up under load."""
        at = obj.get_timer()
        armed = self._armed
        previous = armed.get(obj)
        if previous == at:
            return
        if previous is not None:
            self._stale += 1
        if at is None:
            del armed[obj]
        else:
            armed[obj] = at
            heapq.heappush(self._heap, (at, next(self._seq), obj))
        if self._stale > 1024 and self._stale * 2 > len(self._heap):
            self._heap = [e for e in self._heap if armed.get(e[2]) == e[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _service(self, txn: Transaction, now: float) -> None:
        """After touching a transaction: send its output, deliver responses/timeouts, re-arm, reap."""
        out = txn.take_output()
        if out:
            dest = txn.destination
            assert isinstance(dest, Target)
            for data in out:
                self._out.append((data, dest))
        if isinstance(txn, ClientTransaction):
            handler = txn.owner
            try:
                if txn.responses:
                    responses = txn.responses
                    txn.responses = []
                    for resp in responses:
                        if callable(handler):
                            handler(txn, resp, now)
                if txn.timed_out and not txn.reported:
                    txn.reported = True
                    dest = txn.destination
                    if isinstance(dest, Target):
                        self._emit(TargetUnreachable(dest))
                    if callable(handler):
                        handler(txn, None, now)
            finally:  # whatever the handler did, the transaction is re-armed or reaped
                if txn.terminated:
                    self._client.pop(client_key(txn.branch, txn.request.method), None)
                self._arm(txn)
            return
        assert isinstance(txn, ServerTransaction)
        try:
            if txn.timed_out and not txn.reported:
                txn.reported = True
                self._server_timeout(txn, now)
        finally:
            if txn.terminated:
                req = txn.request
                key = server_key(req)
                self._server.pop(key, None)
                mkey = (req.call_id, req.from_.tag or "", req.cseq.number, req.method)
                if self._merge.get(mkey) == key:
                    del self._merge[mkey]
            self._arm(txn)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _observe(self, received: str, rport: str | None) -> None:
        """Learn our public address from a response (RFC 3581 §4: NAT discovery on the client side);
        with ``contact_from_observed`` our Contact follows it, so in-dialog requests reach us through
        the NAT binding."""
        try:
            port = parse_int(rport, "rport", 65535) if rport else self.config.local_port
        except SipParseError:
            return
        observed = (received.strip("[]"), port)
        if observed == self.observed_address:
            return
        self.observed_address = observed
        if self.config.contact_from_observed:
            host = f"[{observed[0]}]" if ":" in observed[0] else observed[0]
            transport = self._transport_param(self.config.transport)
            self.contact = f"<sip:{self.config.user}@{host}:{port}{transport}>"

    # ------------------------------------------------------------------ addressing
    @staticmethod
    def _transport_param(transport: str) -> str:
        return "" if transport == "UDP" else f";transport={transport.lower()}"

    def _target_for_uri(self, uri_text: str) -> Target:
        """RFC 3263 §4.1 transport choice: the URI's transport param, TLS for sips, else our default."""
        uri = parse_uri(uri_text)
        if not isinstance(uri, SipUri):
            raise DialogError(f"cannot route to non-SIP URI {uri_text}")
        transport = uri.transport.upper() if uri.transport else ("TLS" if uri.scheme == "sips" else None)
        maddr = uri.params.get("maddr")
        return Target(transport or self.config.transport, maddr or uri.host_address, uri.port)

    def _next_hop(self, request_uri: str, routes: list[str], in_dialog: bool) -> Target:
        """§8.1.2: the outbound proxy (out of dialog), else the first Route, else the Request-URI."""
        if self.config.outbound_proxy is not None and (not in_dialog or not routes):
            return self.config.outbound_proxy
        if routes:
            return self._target_for_uri(str(NameAddr.parse(routes[0]).uri))
        return self._target_for_uri(request_uri)

    def _via(self, target: Target) -> str:
        rport = ";rport" if target.transport == "UDP" else ""
        return f"SIP/2.0/{target.transport} {self.config.sent_by};branch={new_branch()}{rport}"

    @staticmethod
    def _response_target(request: Request, source: Target) -> Target:
        """§18.2.2 (with RFC 3581 §4): reliable → back on the connection it came from; UDP → received
        address and rport, else sent-by."""
        if source.transport in RELIABLE:
            return source
        via = request.top_via
        maddr = via.params.get("maddr")
        if maddr:
            return Target("UDP", maddr, via.port or 5060)
        received = via.params.get("received")
        rport = via.params.get("rport")
        port = via.port or 5060
        if rport:
            try:
                port = parse_int(rport, "rport", 65535)
            except SipParseError:
                pass
        host = received or via.host
        return Target("UDP", host.strip("[]"), port)

    @staticmethod
    def _stamp_via(request: Request, source: Target) -> None:
        """§18.2.1 / RFC 3581 §4: record the source address as received= and, if asked, rport=.

        Values the sender put there itself are overwritten: responses must never be steered to an
        address the request did not come from (no reflection through a forged ``received``)."""
        via = request.top_via
        changed = False
        if via.host.strip("[]") != source.host or "received" in via.params:
            via.params["received"] = source.host
            changed = True
        if "rport" in via.params and source.port is not None and via.params["rport"] != str(source.port):
            via.params["rport"] = str(source.port)
            changed = True
        if changed:
            values = request.headers.get_all("Via")
            values[0] = str(via)
            request.headers.replace_all("Via", values)

    # ------------------------------------------------------------------ sending requests
    def _send_request(
        self,
        request: Request,
        target: Target,
        handler: Callable[[ClientTransaction, Response | None, float], None],
        now: float,
        session: InviteSession | None = None,
    ) -> ClientTransaction:
        reliable = target.transport in RELIABLE
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(request, reliable, target, self.config.timers)
        else:
            txn = NonInviteClientTransaction(request, reliable, target, self.config.timers)
        txn.session = session

        def wrapped(t: ClientTransaction, resp: Response | None, at: float) -> None:
            if resp is not None:
                if resp.status in (401, 407) and self._retry_with_auth(t, resp, target, wrapped, at, session):
                    return
                if resp.status == 422 and self._retry_with_larger_interval(
                    t, resp, target, wrapped, at, session
                ):
                    return
            handler(t, resp, at)

        txn.owner = wrapped
        self._client[client_key(txn.branch, request.method)] = txn
        txn.start(now)
        self._service(txn, now)
        return txn

    def _retry_with_auth(
        self,
        txn: ClientTransaction,
        resp: Response,
        target: Target,
        handler: Callable[[ClientTransaction, Response | None, float], None],
        now: float,
        session: InviteSession | None,
    ) -> bool:
        """§22.2 / §8.1.3.5: answer a 401/407 once per nonce (again only if stale=true), with CSeq+1, the
        same Call-ID and tags and a new branch. Returns False to pass the challenge to the caller."""
        old = txn.request
        attempts = txn.auth_attempts
        if attempts >= self.config.max_auth_attempts:
            return False
        if session is not None and session.cancel_requested and old is session.invite:
            return False  # the caller already hung up: let the challenge end the call
        header, answer_header = (
            ("Proxy-Authenticate", "Proxy-Authorization")
            if resp.status == 407
            else ("WWW-Authenticate", "Authorization")
        )
        values = resp.headers.get_all(header)
        if not values:
            return False
        new = Request(old.method, old.uri, old.headers.copy(), old.body)
        nonces = set(txn.auth_nonces)
        added = False
        for value in values:
            try:
                challenge = parse_challenge(value)
            except SipParseError:
                continue
            previous = txn.auth_nonces
            if challenge.nonce in previous and not challenge.stale:
                return False
            auth = self._auth.authorization(challenge, old.method, old.uri, old.body)
            if auth is None:
                continue
            kept = [v for v in new.headers.get_all(answer_header) if f'realm="{challenge.realm}"' not in v]
            new.headers.remove(answer_header)
            for v in kept:
                new.headers.add(answer_header, v)
            new.headers.add(answer_header, auth)
            nonces.add(challenge.nonce)
            added = True
        if not added:
            return False
        new_txn = self._resend(txn, new, target, handler, now, session)
        new_txn.auth_attempts = attempts + 1
        new_txn.auth_nonces = frozenset(nonces)
        return True

    def _resend(
        self,
        txn: ClientTransaction,
        new: Request,
        target: Target,
        handler: Callable[[ClientTransaction, Response | None, float], None],
        now: float,
        session: InviteSession | None,
    ) -> ClientTransaction:
        """Send an edited copy of ``txn.request`` as a new transaction (§8.1.3.5): CSeq+1 (from the dialog
        when confirmed), a new branch, the same Call-ID and tags; the session follows the new INVITE."""
        old = txn.request
        if session is not None and session.dialog is not None and session.state is SessionState.CONFIRMED:
            cseq = session.dialog.next_local_seq()
        else:
            cseq = old.cseq.number + 1
            if session is not None and session.dialog is not None and old.method != "INVITE":
                session.dialog.local_seq = cseq
        vias = new.headers.get_all("Via")
        vias[0] = self._via(target)
        new.headers.replace_all("Via", vias)
        new.headers.set("CSeq", f"{cseq} {old.method}")
        new.invalidate()
        if session is not None and old is session.invite:
            session.invite = new
            if session.state is not SessionState.CONFIRMED and session.dialog is not None:
                self._dialogs.pop(session.dialog.id, None)
                session.dialog = None
        new_txn = self._send_request(new, target, handler, now, session)
        if session is not None:
            if session.invite is new:
                session.invite_txn = new_txn
                self._calls[(new.call_id, session.local_tag)] = session
            if txn is session.reinvite_out:
                session.reinvite_out = new_txn
        # The wrapped handler of the new transaction is the same as the old one's.
        new_txn.owner = handler
        return new_txn

    def _retry_with_larger_interval(
        self,
        txn: ClientTransaction,
        resp: Response,
        target: Target,
        handler: Callable[[ClientTransaction, Response | None, float], None],
        now: float,
        session: InviteSession | None,
    ) -> bool:
        """RFC 4028 §7.4: a 422 carries Min-SE; retry once with Session-Expires raised to it."""
        old = txn.request
        try:
            min_se = parse_int((resp.headers.get("Min-SE") or "").split(";")[0], "Min-SE")
            current = session_expires_of(old)
        except SipParseError:
            return False
        if current is None or min_se <= current[0] or txn.auth_attempts > self.config.max_auth_attempts:
            return False
        new = Request(old.method, old.uri, old.headers.copy(), old.body)
        new.headers.set("Session-Expires", str(min_se))
        new.headers.set("Min-SE", str(min_se))
        new_txn = self._resend(txn, new, target, handler, now, session)
        new_txn.auth_attempts = txn.auth_attempts + 1
        new_txn.auth_nonces = txn.auth_nonces
        if session is not None:
            session.se = min_se
        return True

    # ------------------------------------------------------------------ out-of-dialog requests
    def new_request(
        self,
        method: str,
        request_uri: str,
        to: str,
        from_: str,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[Request, Target]:
        """A request outside any dialog (§8.1.1) and the next hop it goes to (§8.1.2)."""
        target = self._next_hop(request_uri, [], in_dialog=False)
        from_addr = NameAddr.parse(from_)
        from_addr.params["tag"] = from_tag or new_token()
        items: list[tuple[str, str]] = [
            ("Via", self._via(target)),
            ("Max-Forwards", "70"),
            ("From", str(from_addr)),
            ("To", str(NameAddr.parse(to))),
            ("Call-ID", call_id or f"{new_token()}@{self.config.local_host}"),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", self.config.user_agent),
        ]
        if headers:
            items.extend(headers)
        if body and content_type:
            items.append(("Content-Type", content_type))
        return Request(method, request_uri, items, body), target

    def send_request(
        self,
        request: Request,
        target: Target,
        handler: Callable[[ClientTransaction, Response | None, float], None],
        now: float,
    ) -> ClientTransaction:
        """Send a stand-alone request in a client transaction; 401/407 are answered with the configured
        credentials (CSeq+1, same Call-ID); ``handler`` sees every other response, or None on timeout."""
        return self._send_request(request, target, handler, now)

    def emit(self, event: Event) -> None:
        """Queue an event for :meth:`next_event` (used by registration and keepalive helpers)."""
        self._events.append(event)

    # ------------------------------------------------------------------ UAC: calls
    def invite(
        self,
        to: str,
        from_: str,
        body: bytes,
        now: float,
        content_type: str = "application/sdp",
        request_uri: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> InviteSession:
        """Place a call (§13.2.1). ``to``/``from_`` are name-addr or URI text; the Request-URI defaults
        to the To URI. Returns the session; events follow (CallProgress, CallAnswered or CallEnded)."""
        to_addr = NameAddr.parse(to)
        from_addr = NameAddr.parse(from_)
        local_tag = new_token()
        from_addr.params["tag"] = local_tag
        ruri = request_uri or str(to_addr.uri)
        routes: list[str] = []
        target = self._next_hop(ruri, routes, in_dialog=False)
        call_id = f"{new_token()}@{self.config.local_host}"
        items: list[tuple[str, str]] = [
            ("Via", self._via(target)),
            ("Max-Forwards", "70"),
            ("From", str(from_addr)),
            ("To", str(to_addr)),
            ("Call-ID", call_id),
            ("CSeq", f"{random.randint(1, 10000)} INVITE"),
            ("Contact", self.contact),
            ("Allow", ALLOW),
            ("User-Agent", self.config.user_agent),
        ]
        if self.config.session_expires:
            items += [("Supported", "timer"), ("Session-Expires", str(self.config.session_expires))]
        if headers:
            items.extend(headers)
        if body:
            items.append(("Content-Type", content_type))
        request = Request("INVITE", ruri, items, body)
        session = InviteSession(request, True, local_tag, target)
        self._calls[(call_id, local_tag)] = session
        session.invite_txn = self._send_request(request, target, self._uac_invite_response, now, session)
        return session

    @staticmethod
    def _session_of(txn: Transaction) -> InviteSession | None:
        session = txn.session
        return session if isinstance(session, InviteSession) else None

    def _uac_invite_response(self, txn: ClientTransaction, resp: Response | None, now: float) -> None:
        session = self._session_of(txn)
        if session is None:
            return
        if resp is None:
            if session.state in (SessionState.CALLING, SessionState.EARLY):
                if txn.transport_failed:  # §8.1.3.1: a transport error counts as 503
                    self._end(session, 503, "Service Unavailable (transport error)", remote=False, now=now)
                else:
                    self._end(session, 408, "Request Timeout", remote=False, now=now)
            return
        status = resp.status
        tag = resp.to.tag
        if status < 200:
            if session.state is SessionState.TERMINATED:
                return
            if tag is not None and status > 100:
                if session.dialog is None or session.dialog.remote_tag != tag:
                    session.dialog = Dialog.from_uac(session.invite, resp)
                    self._track(session, session.dialog.id)
            if session.state is SessionState.CALLING:
                session.state = SessionState.EARLY
            if session.cancel_requested and not session.cancel_sent:
                self._send_cancel(session, now)
            if status > 100:
                self._emit(CallProgress(session, status, resp.reason, resp.body, resp.content_type))
            return
        if status < 300:
            self._uac_2xx(session, resp, now)
            return
        if session.state in (SessionState.CALLING, SessionState.EARLY):
            if session.dialog is not None:
                self._dialogs.pop(session.dialog.id, None)
            self._end(session, status, resp.reason, remote=True, now=now, cause=resp.headers.get("Reason"))

    def _uac_2xx(self, session: InviteSession, resp: Response, now: float) -> None:
        """§13.2.2.4: ACK every 2xx (new transaction-less request); a 2xx from a second fork, or one
        after we gave up, is ACKed and then BYEd."""
        tag = resp.to.tag
        if tag is None:
            log.info("2xx without To tag for %s dropped", session.call_id)
            return
        dialog = session.dialog
        if dialog is not None and dialog.remote_tag == tag and session._ack is not None:
            if session._ack is not None and session._ack_target is not None:
                self._out.append((session._ack, session._ack_target))  # retransmitted 2xx
            return
        if session.state is SessionState.CONFIRMED or session.state is SessionState.TERMINATED:
            stray = Dialog.from_uac(session.invite, resp)
            self._send_ack(session, stray, now, remember=False)
            self._send_bye(stray, None, now)
            return
        if dialog is None or dialog.remote_tag != tag:
            if dialog is not None:
                self._dialogs.pop(dialog.id, None)
            dialog = Dialog.from_uac(session.invite, resp)
        dialog.confirm(resp)
        session.dialog = dialog
        self._track(session, dialog.id)
        session.state = SessionState.CONFIRMED
        session.remote_body = resp.body
        self._send_ack(session, dialog, now, remember=True)
        session.peer_allow = resp.headers.get_all("Allow")
        self._session_timer_from_response(session, resp, now)
        if session.cancel_requested:
            self.hangup(session, now)
            return
        self._emit(CallAnswered(session, resp.body, resp.content_type))

    def _send_ack(self, session: InviteSession, dialog: Dialog, now: float, remember: bool) -> None:
        invite = session.invite
        target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
        extra = [("Authorization", v) for v in invite.headers.get_all("Authorization")]
        extra += [("Proxy-Authorization", v) for v in invite.headers.get_all("Proxy-Authorization")]
        ack = dialog.create_request("ACK", self._via(target), None, extra=extra, cseq=invite.cseq.number)
        data = ack.encode()
        self._out.append((data, target))
        if remember:
            session._ack = data
            session._ack_target = target

    def _send_cancel(self, session: InviteSession, now: float) -> None:
        """§9.1: only once a provisional response has arrived; same branch as the INVITE."""
        session.cancel_sent = True
        cancel = build_cancel(session.invite)
        if session.hangup_cause:
            cancel.headers.add("Reason", session.hangup_cause)

        def done(txn: ClientTransaction, resp: Response | None, at: float) -> None:
            return None

        txn = NonInviteClientTransaction(
            cancel, session.target.transport in RELIABLE, session.target, self.config.timers
        )
        txn.owner = done
        self._client[client_key(txn.branch, "CANCEL")] = txn
        txn.start(now)
        self._service(txn, now)

    def end_stale_dialog(self, dialog: Dialog, now: float, cause: str | None = None) -> None:
        """BYE in a dialog a previous process left up (restored from :meth:`Dialog.snapshot`). Requests it
        sent after the snapshot are unknown, so the CSeq jumps ahead to stay above them (§12.2.1.1 only
        asks for it to grow); the answer, if any, is not waited for."""
        dialog.local_seq = (dialog.local_seq or 0) + 1000
        self._send_bye(dialog, None, now, cause)

    def _send_bye(
        self, dialog: Dialog, session: InviteSession | None, now: float, cause: str | None = None
    ) -> None:
        target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
        extra = [("User-Agent", self.config.user_agent)]
        reason = cause or (session.hangup_cause if session is not None else None)
        if reason:
            extra.append(("Reason", reason))
        bye = dialog.create_request("BYE", self._via(target), None, extra=extra)
        dialog.state = DialogState.TERMINATED
        self._dialogs.pop(dialog.id, None)

        def done(txn: ClientTransaction, resp: Response | None, at: float) -> None:
            return None

        self._send_request(bye, target, done, now, session)

    def _end(
        self,
        session: InviteSession,
        status: int | None,
        reason: str,
        remote: bool,
        now: float,
        cause: str | None = None,
    ) -> None:
        if session.end_reported:
            session.state = SessionState.TERMINATED
            return
        session.state = SessionState.TERMINATED
        session.end_reported = True
        if session.reinvite_retry is not None:
            session.reinvite_retry.cancel()
        if session.st_timer is not None:
            session.st_timer.cancel()
        if session.answer_timer is not None:
            session.answer_timer.cancel()
            session.answer_timer = None
        pending = session.offer_in
        if pending is not None and pending.state in (State.PROCEEDING, State.TRYING):
            # A re-INVITE/UPDATE still waiting for the application gets a final answer (§15.1.2).
            session.offer_in = None
            status = 487 if pending.request.method == "INVITE" else 481
            self._respond(pending, make_response(pending.request, status, to_tag=session.local_tag), now)
        if not session.bye_pending:  # a deferred BYE still needs the dialog to find the ACK
            if session.dialog is not None:
                session.dialog.state = DialogState.TERMINATED
            self._untrack(session)
        self._calls.pop((session.call_id, session.local_tag), None)
        self._emit(CallEnded(session, status, reason, remote, cause))

    def _untrack(self, session: InviteSession) -> None:
        for key in session.dialog_keys:
            if self._dialogs.get(key) is session:
                del self._dialogs[key]
        session.dialog_keys.clear()

    def _track(self, session: InviteSession, key: tuple[str, str, str]) -> None:
        """Index the session by a dialog id (early or confirmed); all of them are dropped at the end."""
        self._dialogs[key] = session
        if key not in session.dialog_keys:
            session.dialog_keys.append(key)

    # ------------------------------------------------------------------ application commands
    def hangup(self, session: InviteSession, now: float, cause: str | None = None) -> None:
        """End the call the right way for its state: CANCEL (§9.1) before a final response, BYE (§15)
        after a 2xx, 603 Decline for an incoming call not yet answered. ``cause`` goes out as the
        ``Reason`` header (RFC 3326) of the BYE or CANCEL."""
        state = session.state
        if state is SessionState.TERMINATED:
            return
        if cause:
            session.hangup_cause = cause
        if session.is_uac and state in (SessionState.CALLING, SessionState.EARLY):
            session.cancel_requested = True
            if state is SessionState.EARLY and not session.cancel_sent:
                self._send_cancel(session, now)
            return
        if state is SessionState.INCOMING:
            self.reject(session, 603, now)
            return
        txn = session.invite_txn
        if (
            not session.is_uac
            and isinstance(txn, InviteServerTransaction)
            and not txn.ack_received
            and not txn.terminated
        ):
            # §15: the callee must not send BYE before the ACK for its 2xx (or the 2xx's timeout).
            session.bye_pending = True
        elif session.dialog is not None:
            self._send_bye(session.dialog, session, now)
        self._end(session, None, "hangup", remote=False, now=now)

    def ring(self, session: InviteSession, now: float, body: bytes = b"", status: int = 180) -> None:
        """Send 180 Ringing, or 183 Session Progress with an early-media SDP ``body``."""
        if session.state is not SessionState.INCOMING:
            raise DialogError("ring() needs an incoming call not yet answered")
        extra = [("Contact", self.contact)]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        resp = make_response(session.invite, status, to_tag=session.local_tag, extra=extra, body=body)
        self._respond(session.invite_txn, resp, now)

    def answer(
        self, session: InviteSession, body: bytes, now: float, content_type: str = "application/sdp"
    ) -> None:
        """Send 200 OK with the answer ``body``; retransmitted until the ACK arrives (§13.3.1.4)."""
        if session.state is not SessionState.INCOMING:
            raise DialogError("answer() needs an incoming call not yet answered")
        if session.answer_timer is not None:
            session.answer_timer.cancel()
            session.answer_timer = None
        extra = [("Contact", self.contact), ("Allow", ALLOW), ("User-Agent", self.config.user_agent)]
        extra += self._session_expires_headers(session)
        if body:
            extra.append(("Content-Type", content_type))
        session.local_body = body
        resp = make_response(session.invite, 200, to_tag=session.local_tag, extra=extra, body=body)
        dialog = Dialog.from_uas(session.invite, session.local_tag, confirmed=True)
        session.dialog = dialog
        self._track(session, dialog.id)
        session.state = SessionState.CONFIRMED
        self._respond(session.invite_txn, resp, now)
        self._arm_session_timer(session, now)

    def reject(self, session: InviteSession, status: int, now: float, reason: str | None = None) -> None:
        """Refuse an incoming call with a final error status (486 Busy Here, 603 Decline …)."""
        if session.state is not SessionState.INCOMING:
            raise DialogError("reject() needs an incoming call not yet answered")
        if status < 300:
            raise DialogError("reject() needs a status of 300 or more")
        resp = make_response(session.invite, status, reason, to_tag=session.local_tag)
        self._respond(session.invite_txn, resp, now)
        self._end(session, status, resp.reason, remote=False, now=now)

    def reinvite(
        self, session: InviteSession, body: bytes, now: float, content_type: str = "application/sdp"
    ) -> None:
        """Send a re-INVITE with a new offer (hold/unhold, codec change; §14.1). The answer comes as
        OfferAnswered; a 491 is retried after the §14.1 random delay."""
        if session.state is not SessionState.CONFIRMED or session.dialog is None:
            raise DialogError("re-INVITE needs a confirmed dialog")
        if session.reinvite_out is not None or session.offer_in is not None:
            raise DialogError("a re-INVITE is already in progress")
        dialog = session.dialog
        target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
        extra = [("Allow", ALLOW)]
        extra += [("Authorization", v) for v in session.invite.headers.get_all("Authorization")]
        extra += [("Proxy-Authorization", v) for v in session.invite.headers.get_all("Proxy-Authorization")]
        if session.se is not None:
            extra += [("Supported", "timer"), ("Session-Expires", f"{session.se};refresher=uac")]
        req = dialog.create_request(
            "INVITE", self._via(target), self.contact, body, content_type, extra=extra
        )
        session.reinvite_body = body
        session.local_body = body
        session.reinvite_out = self._send_request(req, target, self._reinvite_response, now, session)

    def _reinvite_response(self, txn: ClientTransaction, resp: Response | None, now: float) -> None:
        session = self._session_of(txn)
        if session is None or session.dialog is None:
            return
        if resp is not None and resp.status < 200:
            return
        if session.reinvite_out is txn:
            session.reinvite_out = None
        if resp is None or resp.status in (408, 481):
            # §14.1: the dialog is gone or unreachable; end the call.
            if session.state is SessionState.CONFIRMED:
                self.hangup(session, now)
            return
        dialog = session.dialog
        if 200 <= resp.status < 300:
            dialog.refresh_target(resp)
            target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
            ack = dialog.create_request("ACK", self._via(target), None, cseq=txn.request.cseq.number)
            self._out.append((ack.encode(), target))
            if session.state is SessionState.TERMINATED:
                return  # ACKed so the peer stops retransmitting; the call is already over
            session.remote_body = resp.body or session.remote_body
            self._session_timer_from_response(session, resp, now)
            if session.refreshing:
                session.refreshing = False
            else:
                self._emit(OfferAnswered(session, resp.status, resp.body))
            return
        if resp.status == 491:
            delay = glare_retry_delay(dialog.is_uac)
            body = session.reinvite_body

            def retry(at: float) -> None:
                session.reinvite_retry = None
                if (
                    session.state is SessionState.CONFIRMED
                    and session.reinvite_out is None
                    and session.offer_in is None
                ):
                    self.reinvite(session, body, at)
                elif session.state is SessionState.CONFIRMED:
                    session.reinvite_retry = self.call_at(at + glare_retry_delay(dialog.is_uac), retry)

            session.reinvite_retry = self.call_at(now + delay, retry)
            return
        if session.refreshing:
            session.refreshing = False
            self._arm_session_timer(session, now, retry=True)
            return
        self._emit(OfferAnswered(session, resp.status, b""))

    def accept_offer(
        self, session: InviteSession, body: bytes, now: float, content_type: str = "application/sdp"
    ) -> None:
        """Answer a re-INVITE/UPDATE offer (OfferReceived) with 200 OK and our answer ``body``."""
        txn = session.offer_in
        if txn is None:
            raise DialogError("no offer to answer")
        extra = [("Contact", self.contact), ("Allow", ALLOW)]
        extra += self._session_expires_headers(session)
        if body:
            extra.append(("Content-Type", content_type))
            session.local_body = body
        resp = make_response(txn.request, 200, to_tag=session.local_tag, extra=extra, body=body)
        session.offer_in = None
        if isinstance(txn, InviteServerTransaction):
            session.answered_offer = txn  # its ACK stops the 2xx retransmissions
        self._respond(txn, resp, now)

    def reject_offer(self, session: InviteSession, now: float, status: int = 488) -> None:
        """Refuse a re-INVITE/UPDATE offer; the previous session description stays (§14.2)."""
        txn = session.offer_in
        if txn is None:
            raise DialogError("no offer to answer")
        session.offer_in = None
        self._respond(txn, make_response(txn.request, status, to_tag=session.local_tag), now)

    def send_dtmf(self, session: InviteSession, digit: str, now: float, duration_ms: int = 160) -> None:
        """Send one digit as SIP INFO with ``application/dtmf-relay`` (the de-facto Cisco format)."""
        if digit not in "0123456789*#ABCDabcd" or len(digit) != 1:
            raise DialogError(f"not a DTMF digit: {digit!r}")
        body = f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n".encode()
        self.send_in_dialog(session, "INFO", now, body, DTMF_RELAY)

    def send_in_dialog(
        self,
        session: InviteSession,
        method: str,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send INFO/UPDATE/OPTIONS inside the call's dialog (§12.2.1.1)."""
        if session.dialog is None or session.state is not SessionState.CONFIRMED:
            raise DialogError(f"{method} needs a confirmed dialog")
        dialog = session.dialog
        target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
        req = dialog.create_request(method, self._via(target), self.contact, body, content_type, extra)

        def done(txn: ClientTransaction, resp: Response | None, at: float) -> None:
            if resp is None or resp.status in (408, 481):
                if session.state is SessionState.CONFIRMED:
                    self.hangup(session, at)
            elif resp.status >= 300:
                self._emit(RequestFailed(method, resp.status, resp))

        self._send_request(req, target, done, now, session)

    # ------------------------------------------------------------------ session timers (RFC 4028)
    @staticmethod
    def _session_expires_headers(session: InviteSession) -> list[tuple[str, str]]:
        """Session-Expires for a 2xx we send: refresher=uac names the peer (the request's sender),
        refresher=uas names us; Require: timer when the peer must refresh (§9)."""
        if session.se is None:
            return []
        refresher = "uas" if session.refresher_us else "uac"
        headers = [("Session-Expires", f"{session.se};refresher={refresher}")]
        if refresher == "uac":
            headers.append(("Require", "timer"))
        return headers

    def _session_timer_from_response(self, session: InviteSession, resp: Response, now: float) -> None:
        """A 2xx to our (re-)INVITE/UPDATE: adopt its interval; refresher=uac means us (§7.2)."""
        try:
            negotiated = session_expires_of(resp)
        except SipParseError:
            negotiated = None
        if negotiated is None:
            if session.se is not None and session.refresher_us:
                self._arm_session_timer(session, now)
            return
        session.se = negotiated[0]
        session.refresher_us = (negotiated[1] or "uac") == "uac"
        self._arm_session_timer(session, now)

    def _session_timer_from_request(self, session: InviteSession, req: Request, now: float) -> None:
        """A re-INVITE/UPDATE from the peer refreshes the session (§10); its Session-Expires may move
        the refresher role."""
        try:
            offered = session_expires_of(req)
        except SipParseError:
            offered = None
        if offered is not None:
            session.se = max(offered[0], self.config.min_se)
            session.refresher_us = (offered[1] or "uac") == "uas"
        if session.se is not None:
            self._arm_session_timer(session, now)

    def _arm_session_timer(self, session: InviteSession, now: float, retry: bool = False) -> None:
        if session.st_timer is not None:
            session.st_timer.cancel()
            session.st_timer = None
        se = session.se
        if se is None or session.state is SessionState.TERMINATED:
            return
        if session.refresher_us:
            delay = min(10.0, se / 8) if retry else refresh_after(se)
            session.st_timer = self.call_at(now + delay, lambda at: self._refresh_session(session, at))
        else:
            session.st_timer = self.call_at(
                now + expire_after(se), lambda at: self._session_expired(session, at)
            )

    def _refresh_session(self, session: InviteSession, now: float) -> None:
        """§10: refresh with UPDATE when the peer allows it (no SDP needed), else re-INVITE with our
        current session description."""
        session.st_timer = None
        if session.state is not SessionState.CONFIRMED or session.dialog is None:
            return
        if session.reinvite_out is not None or session.offer_in is not None:
            self._arm_session_timer(session, now, retry=True)
            return
        peer_allow = {a.upper() for a in self._peer_allow(session)}
        if "UPDATE" in peer_allow:
            dialog = session.dialog
            target = self._next_hop(dialog.remote_target, dialog.route_set, in_dialog=True)
            extra = [("Supported", "timer"), ("Session-Expires", f"{session.se};refresher=uac")]
            req = dialog.create_request("UPDATE", self._via(target), self.contact, extra=extra)

            def done(txn: ClientTransaction, resp: Response | None, at: float) -> None:
                if resp is None or resp.status in (408, 481):
                    if session.state is SessionState.CONFIRMED:
                        self.hangup(session, at)
                elif 200 <= resp.status < 300:
                    self._session_timer_from_response(session, resp, at)
                elif resp.status >= 300:
                    self._arm_session_timer(session, at, retry=True)

            self._send_request(req, target, done, now, session)
            return
        session.refreshing = True
        self.reinvite(session, session.local_body, now)

    @staticmethod
    def _peer_allow(session: InviteSession) -> list[str]:
        """Methods the peer allows: the Allow of its INVITE (we are UAS) or of its 2xx (we are UAC)."""
        if not session.is_uac:
            return session.invite.headers.get_all("Allow")
        return session.peer_allow

    def _session_expired(self, session: InviteSession, now: float) -> None:
        """§10: no refresh in time: BYE and report."""
        session.st_timer = None
        if session.state is not SessionState.CONFIRMED or session.dialog is None:
            return
        self._send_bye(session.dialog, session, now)
        self._end(session, 408, "session timer expired", remote=False, now=now)

    # ------------------------------------------------------------------ UAS
    def _respond(self, txn: Transaction | None, resp: Response, now: float) -> None:
        if not isinstance(txn, ServerTransaction):
            raise DialogError("no server transaction to respond on")
        txn.respond(resp, now)
        self._service(txn, now)

    def _receive_request(self, req: Request, source: Target, now: float) -> None:
        self._stamp_via(req, source)
        method = req.method
        key = server_key(req)
        txn = self._server.get(key)
        if txn is not None:
            txn.receive(req, now)
            self._service(txn, now)
            if method == "ACK" and isinstance(txn, InviteServerTransaction):
                return
            return
        if method == "ACK":
            self._receive_ack(req, now)
            return
        if method == "CANCEL":
            self._receive_cancel(req, source, now)
            return
        to_tag = req.to.tag
        from_tag = req.from_.tag or ""
        mkey = (req.call_id, from_tag, req.cseq.number, method)
        if to_tag is None and mkey in self._merge:
            # §8.2.2.2 merged request: same Call-ID/From tag/CSeq on another branch (a forking proxy).
            self._out.append(
                (make_response(req, 482, to_tag=new_token()).encode(), self._response_target(req, source))
            )
            return
        reliable = source.transport in RELIABLE
        dest = self._response_target(req, source)
        server: ServerTransaction
        if method == "INVITE":
            server = InviteServerTransaction(req, reliable, dest, self.config.timers)
        else:
            server = NonInviteServerTransaction(req, reliable, dest, self.config.timers)
        self._server[key] = server
        if to_tag is None:
            self._merge[mkey] = key
        cfg = self.config
        if cfg.allow_list is not None and not cfg.allow_list.allows(source.host):
            self._respond(server, make_response(req, 403, to_tag=new_token()), now)
            log.info("refused %s from %s: not in allow list", method, source.host)
            return
        if (req.headers.get("Max-Forwards") or "70").strip().lstrip("0") == "" and method != "OPTIONS":
            self._respond(server, make_response(req, 483, to_tag=new_token()), now)
            return
        ruri = parse_uri(req.uri)
        if not isinstance(ruri, SipUri) and ruri.scheme != "tel":
            # §8.2.2.1: a scheme we do not understand.
            self._respond(server, make_response(req, 416, to_tag=new_token()), now)
            return
        require = req.headers.get_all("Require")
        unsupported = [r for r in require if r.lower() not in ("timer",)]
        if unsupported and method not in ("ACK", "CANCEL"):
            resp = make_response(
                req, 420, to_tag=new_token(), extra=[("Unsupported", ", ".join(unsupported))]
            )
            self._respond(server, resp, now)
            return
        if to_tag is not None:
            self._receive_in_dialog(req, server, source, now)
            return
        if cfg.digest_server is not None and method in ("INVITE", "REGISTER", "MESSAGE", "SUBSCRIBE"):
            ok = False
            stale = False
            for value in req.headers.get_all("Authorization"):
                ok, stale = cfg.digest_server.verify(value, method, req.body)
                if ok:
                    break
            if not ok:
                resp = make_response(
                    req,
                    401,
                    to_tag=new_token(),
                    extra=[("WWW-Authenticate", cfg.digest_server.challenge(stale))],
                )
                self._respond(server, resp, now)
                return
        if method == "INVITE":
            self._receive_invite(req, server, source, now)
        elif method == "OPTIONS":
            self._respond(server, self._options_response(req), now)
        elif method == "BYE":
            self._respond(server, make_response(req, 481, to_tag=new_token()), now)
        elif method in (
            "REGISTER",
            "SUBSCRIBE",
            "PUBLISH",
            "MESSAGE",
            "REFER",
            "NOTIFY",
            "PRACK",
            "INFO",
            "UPDATE",
        ):
            resp = make_response(
                req,
                405 if method == "REGISTER" else 481 if method in ("INFO", "UPDATE", "PRACK") else 501,
                to_tag=new_token(),
                extra=[("Allow", ALLOW)],
            )
            self._respond(server, resp, now)
        else:
            self._respond(server, make_response(req, 501, to_tag=new_token(), extra=[("Allow", ALLOW)]), now)

    def _options_response(self, req: Request) -> Response:
        """§11.2: what we support, without a body."""
        tag = new_token() if req.to.tag is None else None
        extra = [
            ("Allow", ALLOW),
            ("Accept", "application/sdp, application/dtmf-relay"),
            ("Supported", "timer"),
            ("User-Agent", self.config.user_agent),
        ]
        return make_response(req, 200, to_tag=tag, extra=extra)

    def _receive_invite(self, req: Request, server: ServerTransaction, source: Target, now: float) -> None:
        try:
            offered = session_expires_of(req)
        except SipParseError:
            self._respond(server, make_response(req, 400, "Bad Session-Expires", to_tag=new_token()), now)
            return
        if offered is not None and offered[0] < self.config.min_se:
            # RFC 4028 §8.1: too small an interval is refused with our minimum.
            resp = make_response(req, 422, to_tag=new_token(), extra=[("Min-SE", str(self.config.min_se))])
            self._respond(server, resp, now)
            return
        session = InviteSession(req, False, new_token(), source)
        if offered is not None:
            session.se = offered[0]
            refresher = offered[1] or ("uac" if supports_timer(req) else "uas")
            session.refresher_us = refresher == "uas"
        elif self.config.session_expires and (supports_timer(req) or self.config.impose_session_timer):
            # §9: the UAS may impose a timer; the UAC refreshes if it supports timers, else (only when
            # configured to: re-INVITEs a caller never asked for can confuse old PBXs) we do.
            session.se = self.config.session_expires
            session.refresher_us = not supports_timer(req)
        session.invite_txn = server
        server.owner = session
        # 100 Trying at once (§17.2.1): the application may take longer than 200 ms to decide.
        self._respond(server, make_response(req, 100), now)
        session.dialog = None
        self._track(session, (req.call_id, session.local_tag, req.from_.tag or ""))
        if self.config.answer_timeout:
            # A call the application never answers or rejects must not hold state forever.
            session.answer_timer = self.call_at(
                now + self.config.answer_timeout, lambda at: self._unanswered(session, at)
            )
        self._emit(IncomingCall(session))

    def _unanswered(self, session: InviteSession, now: float) -> None:
        session.answer_timer = None
        if session.state is SessionState.INCOMING:
            self.reject(session, 480, now, "No Answer")

    def _receive_ack(self, req: Request, now: float) -> None:
        """ACK for a 2xx (§13.3.1.4 / §17.2.3 — a separate transaction): match by dialog."""
        session = self._dialogs.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if session is None:
            return
        number = req.cseq.number
        for txn in (session.invite_txn, session.offer_in, session.answered_offer):
            if (
                isinstance(txn, InviteServerTransaction)
                and txn.request.cseq.number == number
                and not txn.ack_received
            ):
                txn.ack(now)
                self._service(txn, now)
                if txn is session.invite_txn:
                    if session.bye_pending and session.dialog is not None:
                        session.bye_pending = False
                        self._send_bye(session.dialog, session, now)
                        self._untrack(session)
                    else:
                        if req.body:
                            session.remote_body = req.body
                        self._emit(CallConfirmed(session, req.body))
                elif req.body:
                    # The peer's re-INVITE had no offer; ours went in the 2xx and its answer is here.
                    session.remote_body = req.body
                    self._emit(OfferAnswered(session, 200, req.body))
                return

    def _receive_cancel(self, req: Request, source: Target, now: float) -> None:
        """§9.2: 200 to the CANCEL; 487 to the INVITE if it has no final response yet."""
        target = self._server.get(server_key(req, "INVITE"))
        reliable = source.transport in RELIABLE
        cancel_txn = NonInviteServerTransaction(
            req, reliable, self._response_target(req, source), self.config.timers
        )
        self._server[server_key(req)] = cancel_txn
        if not isinstance(target, InviteServerTransaction):
            self._respond(cancel_txn, make_response(req, 481, to_tag=new_token()), now)
            return
        session = target.owner
        tag = session.local_tag if isinstance(session, InviteSession) else new_token()
        self._respond(cancel_txn, make_response(req, 200, to_tag=tag), now)
        if target.state is State.PROCEEDING:
            target.cancelled = True
            self._respond(target, make_response(target.request, 487, to_tag=tag), now)
            if isinstance(session, InviteSession):
                self._dialogs.pop((req.call_id, session.local_tag, req.from_.tag or ""), None)
                self._end(
                    session, 487, "Request Terminated", remote=True, now=now, cause=req.headers.get("Reason")
                )

    def _receive_in_dialog(self, req: Request, server: ServerTransaction, source: Target, now: float) -> None:
        session = self._dialogs.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        method = req.method
        if session is None or session.state is SessionState.TERMINATED:
            if method == "OPTIONS":
                self._respond(server, self._options_response(req), now)
            else:
                self._respond(server, make_response(req, 481), now)
            return
        dialog = session.dialog
        if dialog is None:
            # The caller sent an in-dialog request before our 2xx (e.g. BYE on an early dialog).
            if method == "BYE" and isinstance(session.invite_txn, InviteServerTransaction):
                self._respond(server, make_response(req, 200), now)
                if session.invite_txn.state is State.PROCEEDING:
                    self._respond(
                        session.invite_txn, make_response(session.invite, 487, to_tag=session.local_tag), now
                    )
                self._end(session, None, "BYE", remote=True, now=now, cause=req.headers.get("Reason"))
            else:
                self._respond(server, make_response(req, 481), now)
            return
        reject = dialog.check_request(req)
        if reject is not None:
            self._respond(server, make_response(req, reject, "CSeq out of order"), now)
            return
        server.owner = session
        if method == "BYE":
            self._respond(server, make_response(req, 200), now)
            self._end(session, None, "BYE", remote=True, now=now, cause=req.headers.get("Reason"))
        elif method in ("INVITE", "UPDATE"):
            self._receive_offer(session, req, server, now)
        elif method == "INFO":
            self._receive_info(session, req, server, now)
        elif method == "OPTIONS":
            self._respond(server, self._options_response(req), now)
        else:
            self._respond(server, make_response(req, 501, extra=[("Allow", ALLOW)]), now)

    def _receive_offer(
        self, session: InviteSession, req: Request, server: ServerTransaction, now: float
    ) -> None:
        """re-INVITE/UPDATE (§14.2, RFC 3311): 491 on glare, 500 + Retry-After when one is pending."""
        if req.method == "INVITE":
            self._respond(server, make_response(req, 100), now)
        if session.reinvite_out is not None and session.reinvite_out.state in (
            State.CALLING,
            State.PROCEEDING,
            State.TRYING,
        ):
            self._respond(server, make_response(req, 491), now)
            return
        if session.offer_in is not None:
            resp = make_response(req, 500, extra=[("Retry-After", str(random.randint(0, 10)))])
            self._respond(server, resp, now)
            return
        assert session.dialog is not None
        session.dialog.refresh_target(req)
        self._session_timer_from_request(session, req, now)
        if req.method == "UPDATE" and not req.body:
            # A session refresh (RFC 4028) without a new offer.
            extra = [("Contact", self.contact), *self._session_expires_headers(session)]
            self._respond(server, make_response(req, 200, extra=extra), now)
            return
        session.offer_in = server
        if req.body and req.body == session.remote_body and session.local_body:
            # RFC 3264 §8: an unchanged offer (a session refresh) gets our previous answer, silently.
            self.accept_offer(session, session.local_body, now)
            return
        if req.body:
            session.remote_body = req.body
        self._emit(OfferReceived(session, req.method, req.body, req.content_type))

    def _receive_info(
        self, session: InviteSession, req: Request, server: ServerTransaction, now: float
    ) -> None:
        ctype = req.content_type
        if not req.body:
            self._respond(server, make_response(req, 200), now)
            return
        digit: str | None = None
        duration = 160
        text = req.body.decode("ascii", "replace")
        if ctype == DTMF_RELAY:
            for line in text.splitlines():
                name, _, value = line.partition("=")
                name = name.strip().lower()
                if name == "signal":
                    digit = value.strip()[:1].upper()
                elif name == "duration":
                    try:
                        duration = parse_int(value, "Duration", 100000)
                    except SipParseError:
                        pass
        elif ctype == "application/dtmf":
            digit = text.strip()[:1].upper()
        else:
            self._respond(server, make_response(req, 415, extra=[("Accept", DTMF_RELAY)]), now)
            return
        if digit is None or digit not in "0123456789*#ABCD" or not digit:
            self._respond(server, make_response(req, 400, "Bad DTMF"), now)
            return
        self._respond(server, make_response(req, 200), now)
        self._emit(DtmfReceived(session, digit, duration))

    def _server_timeout(self, txn: ServerTransaction, now: float) -> None:
        """Timer H (no ACK for an error) or L without ACK for a 2xx: tear the call down (§13.3.1.4)."""
        session = txn.owner
        if not isinstance(session, InviteSession):
            return
        if (
            isinstance(txn, InviteServerTransaction)
            and txn.last_response is not None
            and txn.last_response.status < 300
        ):
            if (
                txn is session.invite_txn
                and session.dialog is not None
                and (session.state is SessionState.CONFIRMED or session.bye_pending)
            ):
                session.bye_pending = False
                self._send_bye(session.dialog, session, now)
                self._end(session, 408, "no ACK for 2xx", remote=False, now=now)
                self._untrack(session)

    # ------------------------------------------------------------------ responses
    def _receive_response(self, resp: Response, now: float) -> None:
        branch = resp.top_via.branch
        if branch is None:
            return
        txn = self._client.get(client_key(branch, resp.cseq.method))
        if txn is not None:
            via = resp.top_via
            received = via.params.get("received")
            if received is not None:
                self._observe(received, via.params.get("rport"))
            txn.receive(resp, now)
            self._service(txn, now)
            return
        if resp.cseq.method == "INVITE" and 200 <= resp.status < 300:
            # A 2xx retransmitted after the transaction ended: re-ACK from the dialog (§13.2.2.4).
            session = self._dialogs.get((resp.call_id, resp.from_.tag or "", resp.to.tag or ""))
            if session is None:
                session = self._calls.get((resp.call_id, resp.from_.tag or ""))
            if session is not None:
                self._uac_2xx(session, resp, now)
