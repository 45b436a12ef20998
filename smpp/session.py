"""The ESME side of one SMPP 3.4 connection as a sans-I/O state machine (SMPP 3.4 §2.2-2.9).

`EsmeSession` is fed bytes and time and asked for bytes, a timer and events, in the
manner of aioquic's QuicConnection; the asyncio edge (`smpp.client`) only moves bytes
and sleeps until `get_timer()`. Tests drive it with a fake clock.

What it does:
- bind (transceiver, transmitter or receiver, §4.1) with system_type/password;
- enquire_link when the link is idle and a dead-link verdict when it goes unanswered (§4.11);
- a window of outstanding submit_sm (§2.9 "asynchronous" operation) and a per-bind
  token bucket for the throughput a carrier allows;
- ESME_RTHROTTLED / ESME_RMSGQFUL: the submit goes back to the head of the queue and
  sending pauses with exponential back-off (§5.1.3);
- deliver_sm / data_sm are handed out as events with a ticket; the response goes out only
  when the application calls `respond(ticket, …)` (the edge does so after storing);
- malformed PDUs get a generic_nack or an error response (§3.3), never an exception;
- graceful shutdown: stop submitting, wait for the window to drain, unbind (§4.2).

Submissions still queued or in flight when the connection dies are handed back by
`take_unfinished()`, each flagged when it was already written (a possible duplicate).
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass

from smpp import pdu as P
from smpp.pdu import CommandId as C
from smpp.pdu import Status

log = logging.getLogger(__name__)


class BindMode(enum.Enum):
    TRANSCEIVER = C.BIND_TRANSCEIVER
    TRANSMITTER = C.BIND_TRANSMITTER
    RECEIVER = C.BIND_RECEIVER


class State(enum.Enum):
    OPEN = "open"  # connected, bind not yet sent
    BINDING = "binding"
    BOUND = "bound"
    DRAINING = "draining"  # shutting down: waiting for outstanding submit responses
    UNBINDING = "unbinding"
    CLOSED = "closed"


class SessionStateError(Exception):
    """The application asked for something the session's state does not allow."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """One bind's settings (what a carrier hands out, plus our flow-control choices)."""

    system_id: str
    password: str
    system_type: str = ""
    mode: BindMode = BindMode.TRANSCEIVER
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    tps: float | None = None  # submit_sm per second on this bind; None: no limit
    tps_burst: float = 1.0  # token bucket depth
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0  # bind, enquire_link, unbind
    submit_timeout: float = 30.0
    drain_timeout: float = 5.0
    throttle_backoff: float = 1.0
    throttle_backoff_max: float = 30.0

    def __post_init__(self) -> None:
        """Refuse at configuration time what §4.1.1 would make unencodable at bind time."""
        for name, value, limit in (
            ("system_id", self.system_id, 15),
            ("password", self.password, 8),
            ("system_type", self.system_type, 12),
            ("address_range", self.address_range, 40),
        ):
            if len(value.encode("latin-1", "replace")) > limit:
                raise ValueError(f"SMPP {name} is limited to {limit} characters (SMPP 3.4 §4.1.1)")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.tps is not None and self.tps <= 0:
            raise ValueError("tps must be positive")
        if self.tps_burst < 1:
            raise ValueError("tps_burst must be at least 1")


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Bound:
    system_id: str


@dataclass(frozen=True, slots=True)
class BindFailed:
    status: int


@dataclass(frozen=True, slots=True)
class SubmitDone:
    token: Hashable
    message_id: str
    possible_duplicate: bool


@dataclass(frozen=True, slots=True)
class SubmitFailed:
    token: Hashable
    status: int
    temporary: bool  # worth retrying later (system error, application-level temporary)


@dataclass(frozen=True, slots=True)
class DeliverReceived:
    """An inbound deliver_sm or data_sm. Answer it with `respond(ticket, status)`."""

    ticket: int
    pdu: P.ShortMessage | P.DataSm


@dataclass(frozen=True, slots=True)
class Unbound:
    by_peer: bool


@dataclass(frozen=True, slots=True)
class ConnectionDead:
    """The transport must be closed: peer silent, stream unframeable, or bind timed out."""

    reason: str


Event = Bound | BindFailed | SubmitDone | SubmitFailed | DeliverReceived | Unbound | ConnectionDead

_RETRY_HERE = frozenset((Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL))
_TEMPORARY = frozenset((Status.ESME_RSYSERR, Status.ESME_RX_T_APPN, Status.ESME_RUNKNOWNERR))


@dataclass(slots=True)
class _Submission:
    token: Hashable
    pdu: P.ShortMessage
    sent_at: float = 0.0
    possible_duplicate: bool = False  # an earlier attempt may have reached the SMSC


@dataclass(slots=True)
class SessionStats:
    submits_sent: int = 0
    submits_ok: int = 0
    throttled: int = 0
    resubmitted_after_timeout: int = 0
    late_responses: int = 0
    generic_nacks_received: int = 0
    malformed_received: int = 0
    delivers_received: int = 0


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A submission the session could not finish; *written* means the SMSC may have it."""

    token: Hashable
    pdu: P.ShortMessage
    written: bool


class EsmeSession:
    """One SMPP connection from the ESME's side. All methods take *now* (seconds, monotonic)."""

    def __init__(self, config: SessionConfig, now: float) -> None:
        self.config = config
        self.state = State.OPEN
        self.stats = SessionStats()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._reader = P.PduReader()
        self._seq = 0
        self._queue: deque[_Submission] = deque()
        self._inflight: OrderedDict[int, _Submission] = OrderedDict()
        self._awaiting_app: dict[int, int] = {}  # ticket (peer's seq) -> response command_id
        self._bind_seq = 0
        self._bind_deadline: float | None = None
        self._enquire_seq: int | None = None
        self._enquire_deadline: float | None = None
        self._unbind_deadline: float | None = None
        self._drain_deadline: float | None = None
        self._last_rx = now
        self._paused_until = 0.0
        self._backoff = config.throttle_backoff
        self._tokens = config.tps_burst
        self._tokens_at = now

    # ------------------------------------------------------------ application API

    @property
    def can_submit(self) -> bool:
        return self.config.mode is not BindMode.RECEIVER and self.state in (
            State.OPEN,
            State.BINDING,
            State.BOUND,
        )

    @property
    def outstanding(self) -> int:
        """Submissions queued or awaiting a response."""
        return len(self._queue) + len(self._inflight)

    def connection_made(self, now: float) -> None:
        """Send the bind (§4.1). Call once the transport (TCP/TLS) is up."""
        if self.state is not State.OPEN:
            raise SessionStateError(f"connection_made in state {self.state.value}")
        c = self.config
        self._bind_seq = self._next_seq()
        self._send(
            P.Bind(
                c.mode.value,
                self._bind_seq,
                system_id=c.system_id,
                password=c.password,
                system_type=c.system_type,
                addr_ton=c.addr_ton,
                addr_npi=c.addr_npi,
                address_range=c.address_range,
            )
        )
        self.state = State.BINDING
        self._bind_deadline = now + c.response_timeout
        self._last_rx = now

    def submit(
        self, pdu: P.ShortMessage, token: Hashable, now: float, *, possible_duplicate: bool = False
    ) -> None:
        """Queue a submit_sm; its outcome comes back as SubmitDone/SubmitFailed with *token*.

        *possible_duplicate*: an earlier attempt (e.g. on a connection that died) may have
        reached the SMSC; the flag is carried to SubmitDone for counting.
        """
        if not self.can_submit:
            raise SessionStateError(f"cannot submit in state {self.state.value} ({self.config.mode.name})")
        self._queue.append(_Submission(token, pdu, possible_duplicate=possible_duplicate))
        self._pump(now)

    def respond(self, ticket: int, status: int = Status.ESME_ROK) -> bool:
        """Answer an inbound deliver_sm/data_sm. False if the ticket is unknown (already answered)."""
        cid = self._awaiting_app.pop(ticket, None)
        if cid is None or self.state is State.CLOSED:
            return False
        self._send(P.MessageIdResp(cid, ticket, status))
        return True

    def unbind(self, now: float) -> None:
        """Graceful shutdown: no new submits, let the window drain, then unbind (§4.2)."""
        if self.state in (State.OPEN, State.BINDING):
            self.state = State.CLOSED
            self._events.append(Unbound(by_peer=False))
            return
        if self.state is State.BOUND:
            self.state = State.DRAINING
            self._drain_deadline = now + self.config.drain_timeout
            self._maybe_finish_drain(now)

    def take_unfinished(self) -> list[Unfinished]:
        """Hand back every submission not finished, in flight first (oldest first), then queued.

        Call after the connection is gone (or given up on); the session keeps none of them.
        """
        out = [Unfinished(s.token, s.pdu, True) for s in self._inflight.values()]
        out += [Unfinished(s.token, s.pdu, s.possible_duplicate) for s in self._queue]
        self._inflight.clear()
        self._queue.clear()
        return out

    def connection_lost(self) -> None:
        """The transport closed. Unanswered inbound tickets become void (the SMSC will redeliver)."""
        self.state = State.CLOSED
        self._awaiting_app.clear()

    # ------------------------------------------------------------ I/O side

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        try:
            frames = self._reader.feed(data)
        except P.FramingError as e:
            self._dead(f"unframeable stream: {e}")
            return
        if frames:
            self._last_rx = now
        for raw in frames:
            try:
                pdu = P.decode(raw)
            except P.PduError as e:
                self.stats.malformed_received += 1
                log.warning("malformed PDU 0x%08x seq %d: %s", e.command_id, e.sequence_number, e)
                self._answer_malformed(e)
                continue
            self._handle(pdu, now)
            if self.state is State.CLOSED:
                break
        self._pump(now)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The next time `handle_timer` must be called, or None."""
        if self.state is State.CLOSED:
            return None
        cands: list[float] = []
        if self._bind_deadline is not None:
            cands.append(self._bind_deadline)
        if self._unbind_deadline is not None:
            cands.append(self._unbind_deadline)
        if self._drain_deadline is not None:
            cands.append(self._drain_deadline)
        if self.state is State.BOUND or self.state is State.DRAINING:
            if self._enquire_deadline is not None:
                cands.append(self._enquire_deadline)
            else:
                cands.append(self._last_rx + self.config.enquire_link_interval)
        if self._inflight:
            first = next(iter(self._inflight.values()))
            cands.append(first.sent_at + self.config.submit_timeout)
        if self._queue and self.state is State.BOUND and len(self._inflight) < self.config.window:
            t = self._paused_until
            if self.config.tps is not None and self._tokens < 1.0:
                t = max(t, self._tokens_at + (1.0 - self._tokens) / self.config.tps)
            cands.append(t)
        return min(cands) if cands else None

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self._bind_deadline is not None and now >= self._bind_deadline:
            self._dead("no bind response")
            return
        if self._unbind_deadline is not None and now >= self._unbind_deadline:
            self._dead("no unbind response")
            return
        if self._enquire_deadline is not None and now >= self._enquire_deadline:
            self._dead("enquire_link unanswered")
            return
        if (
            self.state in (State.BOUND, State.DRAINING)
            and self._enquire_deadline is None
            and now >= self._last_rx + self.config.enquire_link_interval
        ):
            self._enquire_seq = self._next_seq()
            self._send(P.Pdu(C.ENQUIRE_LINK, self._enquire_seq))
            self._enquire_deadline = now + self.config.response_timeout
        timeout = self.config.submit_timeout
        while self._inflight:
            seq, first = next(iter(self._inflight.items()))
            if now < first.sent_at + timeout:
                break
            # The response is lost or late; the SMSC may have the message. Send it again
            # at the head of the queue and count the possible duplicate.
            del self._inflight[seq]
            first.possible_duplicate = True
            self.stats.resubmitted_after_timeout += 1
            log.warning("submit_sm seq %d unanswered after %.0fs, resubmitting", seq, timeout)
            self._queue.appendleft(first)
        if self.state is State.DRAINING:
            self._maybe_finish_drain(now)
        self._pump(now)

    # ------------------------------------------------------------ internals

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        return self._seq

    def _send(self, pdu: P.Pdu) -> None:
        self._out += P.encode(pdu)

    def _dead(self, reason: str) -> None:
        log.warning("SMPP session %s: %s", self.config.system_id, reason)
        self.state = State.CLOSED
        self._events.append(ConnectionDead(reason))

    def _pump(self, now: float) -> None:
        """Send queued submits while the window, the token bucket and any back-off allow."""
        if self.state is not State.BOUND or not self._queue or now < self._paused_until:
            return
        c = self.config
        window = c.window
        tps = c.tps
        inflight = self._inflight
        queue = self._queue
        if tps is not None:
            self._tokens = min(c.tps_burst, self._tokens + (now - self._tokens_at) * tps)
            self._tokens_at = now
        while queue and len(inflight) < window:
            if tps is not None:
                if self._tokens < 1.0:
                    break
                self._tokens -= 1.0
            sub = queue.popleft()
            seq = self._next_seq()
            sub.pdu.sequence_number = seq
            try:
                self._out += P.encode(sub.pdu)
            except ValueError as e:
                self._events.append(SubmitFailed(sub.token, Status.ESME_RINVPARLEN, temporary=False))
                log.error("cannot encode submit_sm: %s", e)
                continue
            sub.sent_at = now
            inflight[seq] = sub
            self.stats.submits_sent += 1

    def _maybe_finish_drain(self, now: float) -> None:
        if self.state is not State.DRAINING:
            return
        if self._inflight and (self._drain_deadline is None or now < self._drain_deadline):
            return
        self._drain_deadline = None
        self.state = State.UNBINDING
        self._send(P.Pdu(C.UNBIND, self._next_seq()))
        self._unbind_deadline = now + self.config.response_timeout

    def _answer_malformed(self, e: P.PduError) -> None:
        cid = e.command_id
        if cid & 0x80000000:
            return  # never answer a response (§3.3); it is logged above
        if cid in (C.DELIVER_SM, C.DATA_SM) and e.status != Status.ESME_RINVCMDLEN:
            self._send(P.MessageIdResp(cid | 0x80000000, e.sequence_number, e.status))
        else:
            self._send(P.Pdu(C.GENERIC_NACK, e.sequence_number, e.status))

    def _handle(self, pdu: P.Pdu, now: float) -> None:
        cid = pdu.command_id
        if cid == C.SUBMIT_SM_RESP or cid == C.GENERIC_NACK:
            self._on_submit_resp(pdu, now)
        elif cid == C.DELIVER_SM or cid == C.DATA_SM:
            assert isinstance(pdu, P.ShortMessage | P.DataSm)
            self.stats.delivers_received += 1
            if self.state not in (State.BOUND, State.DRAINING) or self.config.mode is BindMode.TRANSMITTER:
                self._send(P.MessageIdResp(cid | 0x80000000, pdu.sequence_number, Status.ESME_RINVBNDSTS))
                return
            self._awaiting_app[pdu.sequence_number] = cid | 0x80000000
            self._events.append(DeliverReceived(pdu.sequence_number, pdu))
        elif cid == C.ENQUIRE_LINK:
            self._send(P.Pdu(C.ENQUIRE_LINK_RESP, pdu.sequence_number))
        elif cid == C.ENQUIRE_LINK_RESP:
            if pdu.sequence_number == self._enquire_seq:
                self._enquire_seq = None
                self._enquire_deadline = None
        elif cid in P.BIND_RESP_IDS:
            self._on_bind_resp(pdu, now)
        elif cid == C.UNBIND:
            self._send(P.Pdu(C.UNBIND_RESP, pdu.sequence_number))
            self.state = State.CLOSED
            self._events.append(Unbound(by_peer=True))
        elif cid == C.UNBIND_RESP:
            if self.state is State.UNBINDING:
                self.state = State.CLOSED
                self._unbind_deadline = None
                self._events.append(Unbound(by_peer=False))
        elif cid == C.ALERT_NOTIFICATION or cid == C.OUTBIND:
            log.info("ignoring %s from SMSC", C(cid).name)
        elif cid & 0x80000000:
            log.info("ignoring unexpected response 0x%08x seq %d", cid, pdu.sequence_number)
        else:
            # A request an ESME does not serve (submit_sm, query_sm, … sent to us).
            self._send(P.Pdu(C.GENERIC_NACK, pdu.sequence_number, Status.ESME_RINVCMDID))

    def _on_bind_resp(self, pdu: P.Pdu, now: float) -> None:
        if self.state is not State.BINDING or pdu.sequence_number != self._bind_seq:
            return
        self._bind_deadline = None
        if pdu.command_status != Status.ESME_ROK or pdu.command_id == C.GENERIC_NACK:
            self.state = State.CLOSED
            self._events.append(BindFailed(pdu.command_status))
            return
        self.state = State.BOUND
        system_id = pdu.system_id if isinstance(pdu, P.BindResp) else ""
        self._events.append(Bound(system_id))
        self._last_rx = now

    def _on_submit_resp(self, pdu: P.Pdu, now: float) -> None:
        if (
            pdu.command_id == C.GENERIC_NACK
            and self.state is State.BINDING
            and pdu.sequence_number == self._bind_seq
        ):
            self._on_bind_resp(pdu, now)  # some SMSCs nack a bind they cannot parse
            return
        sub = self._inflight.pop(pdu.sequence_number, None)
        if pdu.command_id == C.GENERIC_NACK:
            self.stats.generic_nacks_received += 1
        if sub is None:
            if pdu.command_id == C.GENERIC_NACK:
                log.warning(
                    "generic_nack seq %d status %s", pdu.sequence_number, P.status_name(pdu.command_status)
                )
            else:
                self.stats.late_responses += 1
            return
        status = pdu.command_status
        if pdu.command_id == C.GENERIC_NACK and status == Status.ESME_ROK:
            status = Status.ESME_RSYSERR  # a nack without a reason: treat as a temporary fault
        if status == Status.ESME_ROK:
            self.stats.submits_ok += 1
            self._backoff = self.config.throttle_backoff
            mid = pdu.message_id if isinstance(pdu, P.MessageIdResp) else ""
            self._events.append(SubmitDone(sub.token, mid, sub.possible_duplicate))
        elif status in _RETRY_HERE:
            self.stats.throttled += 1
            # §5.1.3: the SMSC asks us to slow down. This attempt was refused, so resending
            # it adds no duplicate.
            self._queue.appendleft(sub)
            self._paused_until = now + self._backoff
            self._backoff = min(self._backoff * 2, self.config.throttle_backoff_max)
        else:
            self._events.append(SubmitFailed(sub.token, status, temporary=status in _TEMPORARY))
        if self.state is State.DRAINING:
            self._maybe_finish_drain(now)
