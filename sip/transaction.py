"""Transactions (RFC 3261 §17) as sans-I/O state machines, with the RFC 6026 "Accepted" states.

A transaction is fed messages and the current time and asked for what to send and when its next timer
fires; it never touches a socket or a clock. Its owner (``sip.useragent.UserAgentCore``) drains
:meth:`Transaction.take_output` into the transport, keeps :meth:`Transaction.get_timer` in a heap, and
calls :meth:`Transaction.handle_timer` when it is due. Retransmissions reuse the bytes encoded once.

Timers (§17 and table 4 of §A), ``T1``/``T2``/``T4`` from :class:`TimerConfig`; over a reliable
transport the retransmission timers A, E, G are never armed and D, I, J, K are zero (§17.1.1.2, §17.1.2.2,
§17.2.1, §17.2.2).

The UAS-core duty of retransmitting a 2xx to INVITE until the ACK arrives (§13.3.1.4) is carried out by
:class:`InviteServerTransaction` in its Accepted state: it already owns the bytes and the timer, and the
ACK (a separate transaction, matched by dialog) is handed to it with :meth:`~InviteServerTransaction.ack`.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from sip.errors import TransactionError
from sip.message import Request, Response

BRANCH_MAGIC = "z9hG4bK"


def new_branch() -> str:
    """A branch unique in space and time (§8.1.1.7). Random, not a counter: responses are matched by
    branch alone (§17.1.3), so a guessable branch would let an off-path sender inject responses."""
    return BRANCH_MAGIC + os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """§17.1.1.1: T1 (RTT estimate, 500 ms), T2 (max non-INVITE retransmit interval, 4 s), T4 (max time a
    message stays in the network, 5 s)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Transaction:
    """What all four §17 machines share: the request, state, named timers, and output bytes."""

    __slots__ = (
        "_last",
        "_out",
        "_timers",
        "auth_attempts",
        "auth_nonces",
        "config",
        "destination",
        "owner",
        "reliable",
        "reported",
        "request",
        "session",
        "state",
        "timed_out",
        "transport_failed",
    )

    def __init__(self, request: Request, reliable: bool, destination: object, config: TimerConfig) -> None:
        self.request = request
        self.reliable = reliable
        self.destination = destination
        self.config = config
        self.state = State.TRYING
        self.timed_out = False
        #: the failure was the transport's (§8.1.3.1: reported like a 503), not a timeout
        self.transport_failed = False
        self._timers: dict[str, float] = {}
        self._out: list[bytes] = []
        self._last: bytes = b""
        #: whatever the owner wants to find again from this transaction (a call, a callback)
        self.owner: object = None
        #: set by the owner once it has told the TU about a timeout
        self.reported = False
        #: the call (INVITE session) this transaction belongs to, if any
        self.session: object = None
        #: digest bookkeeping for a request re-sent with credentials (§22.2): no endless retries
        self.auth_attempts = 0
        self.auth_nonces: frozenset[str] = frozenset()

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        timers = self._timers
        if not timers:
            return None
        return min(timers.values())

    def take_output(self) -> list[bytes]:
        """Encoded messages to send to :attr:`destination`, oldest first."""
        out = self._out
        if out:
            self._out = []
        return out

    def handle_timer(self, now: float) -> None:
        due = [name for name, at in self._timers.items() if at <= now]
        for name in sorted(due, key=lambda n: self._timers[n]):
            if name in self._timers and self._timers[name] <= now:
                del self._timers[name]
                self._fire(name, now)

    def _fire(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        self._last = data
        self._out.append(data)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._timers.clear()


class ClientTransaction(Transaction):
    """Base of the two client machines; :meth:`receive` returns whether the TU should see a response."""

    __slots__ = ("_interval", "responses")

    def __init__(self, request: Request, reliable: bool, destination: object, config: TimerConfig) -> None:
        super().__init__(request, reliable, destination, config)
        self._interval = config.t1
        #: responses the TU must see, in order (drained by the owner).
        self.responses: list[Response] = []

    @property
    def branch(self) -> str:
        branch = self.request.top_via.branch
        assert branch is not None
        return branch

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def transport_error(self) -> None:
        """§17.1.4: a transport failure is reported to the TU like a timeout and ends the transaction."""
        if self.state is not State.TERMINATED:
            self.timed_out = True
            self.transport_failed = True
            self._terminate()


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 (figure 5, as amended by RFC 6026 §7.2): Calling → Proceeding → Completed/Accepted."""

    __slots__ = ("_ack",)

    def __init__(self, request: Request, reliable: bool, destination: object, config: TimerConfig) -> None:
        super().__init__(request, reliable, destination, config)
        self._ack: bytes | None = None

    def start(self, now: float) -> None:
        if self.request.method != "INVITE":
            raise TransactionError("InviteClientTransaction needs an INVITE")
        self.state = State.CALLING
        self._send(self.request.encode())
        if not self.reliable:
            self._timers["A"] = now + self._interval
        self._timers["B"] = now + 64 * self.config.t1

    def _fire(self, name: str, now: float) -> None:
        if name == "A" and self.state is State.CALLING:
            self._out.append(self._last)
            self._interval *= 2
            self._timers["A"] = now + self._interval
        elif name == "B" and self.state is State.CALLING:
            self.timed_out = True
            self._terminate()
        elif name in ("D", "M"):
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                if state is State.CALLING:
                    self.state = State.PROCEEDING
                    self._timers.pop("A", None)
                    self._timers.pop("B", None)
                self.responses.append(response)
            elif status < 300:
                # RFC 6026: stay to absorb (and pass up) retransmitted and forked 2xx for 64*T1.
                self.state = State.ACCEPTED
                self._timers.clear()
                self._timers["M"] = now + 64 * self.config.t1
                self.responses.append(response)
            else:
                self.state = State.COMPLETED
                self._timers.clear()
                self._ack = build_ack_for_error(self.request, response).encode()
                self._out.append(self._ack)
                if self.reliable:
                    self._terminate()
                else:
                    self._timers["D"] = now + 32.0
                self.responses.append(response)
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                self.responses.append(response)
        elif state is State.COMPLETED and status >= 300 and self._ack is not None:
            self._out.append(self._ack)


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2 (figure 6): Trying → Proceeding → Completed, timers E, F, K."""

    __slots__ = ()

    def start(self, now: float) -> None:
        if self.request.method in ("INVITE", "ACK"):
            raise TransactionError("non-INVITE transaction cannot carry INVITE or ACK")
        self.state = State.TRYING
        self._send(self.request.encode())
        if not self.reliable:
            self._timers["E"] = now + self._interval
        self._timers["F"] = now + 64 * self.config.t1

    def _fire(self, name: str, now: float) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._out.append(self._last)
            if self.state is State.TRYING:
                self._interval = min(2 * self._interval, self.config.t2)
            else:
                self._interval = self.config.t2
            self._timers["E"] = now + self._interval
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self.timed_out = True
            self._terminate()
        elif name == "K":
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        if self.state in (State.TRYING, State.PROCEEDING):
            if response.status < 200:
                self.state = State.PROCEEDING
            else:
                self.state = State.COMPLETED
                self._timers.clear()
                if self.reliable:
                    self._terminate()
                else:
                    self._timers["K"] = now + self.config.t4
            self.responses.append(response)


class ServerTransaction(Transaction):
    """Base of the server machines. The TU answers with :meth:`respond`; retransmitted requests are
    absorbed by :meth:`receive` (the last response is re-sent)."""

    __slots__ = ("last_response",)

    def __init__(self, request: Request, reliable: bool, destination: object, config: TimerConfig) -> None:
        super().__init__(request, reliable, destination, config)
        self.last_response: Response | None = None

    def receive(self, request: Request, now: float) -> None:
        raise NotImplementedError

    def respond(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def transport_error(self) -> None:
        if self.state is not State.TERMINATED:
            self.timed_out = True
            self._terminate()


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 (figure 7, RFC 6026 §7.1): Proceeding → Completed → Confirmed, or Accepted on 2xx.

    A 100 Trying is sent at once (§17.2.1 allows it; the edge does not wait 200 ms for the TU).
    """

    __slots__ = ("_interval", "ack_received", "cancelled")

    def __init__(self, request: Request, reliable: bool, destination: object, config: TimerConfig) -> None:
        super().__init__(request, reliable, destination, config)
        self.state = State.PROCEEDING
        self._interval = config.t1
        self.cancelled = False
        self.ack_received = False

    def receive(self, request: Request, now: float) -> None:
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._timers.clear()
                self.ack_received = True
                if self.reliable:
                    self._terminate()
                else:
                    self._timers["I"] = now + self.config.t4
            return
        if self.state in (State.PROCEEDING, State.COMPLETED, State.ACCEPTED) and self._last:
            # Retransmitted INVITE: send the last response again (§17.2.1; in Accepted, RFC 6026 says
            # absorb it, but re-sending the 2xx is harmless and helps a UAC that lost it).
            self._out.append(self._last)

    def respond(self, response: Response, now: float) -> None:
        status = response.status
        if self.state is not State.PROCEEDING:
            raise TransactionError(f"cannot send {status} in state {self.state.value}")
        self.last_response = response
        self._send(response.encode())
        if status < 200:
            return
        self._interval = self.config.t1
        if status < 300:
            self.state = State.ACCEPTED
            if not self.reliable:
                self._timers["2xx"] = now + self._interval  # §13.3.1.4 retransmission
            self._timers["L"] = now + 64 * self.config.t1
        else:
            self.state = State.COMPLETED
            if not self.reliable:
                self._timers["G"] = now + self._interval
            self._timers["H"] = now + 64 * self.config.t1

    def ack(self, now: float) -> None:
        """The ACK for our 2xx arrived (matched by dialog, §13.3.1.4): stop retransmitting it."""
        self.ack_received = True
        self._timers.pop("2xx", None)

    def _fire(self, name: str, now: float) -> None:
        if name in ("G", "2xx"):
            self._out.append(self._last)
            self._interval = min(2 * self._interval, self.config.t2)
            self._timers[name] = now + self._interval
        elif name == "H" and self.state is State.COMPLETED:
            self.timed_out = True  # no ACK for the error response
            self._terminate()
        elif name == "L":
            # §13.3.1.4: no ACK for the 2xx within 64*T1 means the dialog must be torn down (BYE).
            if not self.ack_received:
                self.timed_out = True
            self._terminate()
        elif name == "I":
            self._terminate()


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2 (figure 8): Trying → Proceeding → Completed, timer J."""

    __slots__ = ()

    def receive(self, request: Request, now: float) -> None:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._last:
            self._out.append(self._last)

    def respond(self, response: Response, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise TransactionError(f"cannot send {response.status} in state {self.state.value}")
        self.last_response = response
        self._send(response.encode())
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        if self.reliable:
            self._terminate()
        else:
            self._timers["J"] = now + 64 * self.config.t1

    def _fire(self, name: str, now: float) -> None:
        if name == "J":
            self._terminate()


def build_ack_for_error(invite: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a non-2xx final response, part of the INVITE transaction.

    Same Request-URI, Call-ID, From, CSeq number and top Via (branch) as the INVITE; To from the response
    (it carries the tag); Route headers of the INVITE.
    """
    h = invite.headers
    items: list[tuple[str, str]] = [
        ("Via", h.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", h.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", h.get("Call-ID") or ""),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    items.extend(("Route", r) for r in h.get_all("Route"))
    return Request("ACK", invite.uri, items)


def build_cancel(invite: Request) -> Request:
    """§9.1: CANCEL with the INVITE's Request-URI, Call-ID, To, From, CSeq number and its top Via only,
    plus its Route headers; the branch is the INVITE's so the server matches the transaction."""
    h = invite.headers
    items: list[tuple[str, str]] = [
        ("Via", h.get_all("Via")[0]),
        ("Max-Forwards", "70"),
        ("From", h.get("From") or ""),
        ("To", h.get("To") or ""),
        ("Call-ID", h.get("Call-ID") or ""),
        ("CSeq", f"{invite.cseq.number} CANCEL"),
    ]
    items.extend(("Route", r) for r in h.get_all("Route"))
    return Request("CANCEL", invite.uri, items)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """§17.1.3: a response matches the client transaction with its top-Via branch and CSeq method."""
    return (branch, "INVITE" if method == "ACK" else method)


def server_key(request: Request, method: str | None = None) -> tuple[str, ...]:
    """§17.2.3: branch + sent-by + method (ACK matches INVITE). Without the magic cookie, fall back to
    the RFC 2543 identity (Request-URI, tags, Call-ID, CSeq number, top Via). ``method="INVITE"`` finds
    the INVITE a CANCEL refers to (§9.2)."""
    via = request.top_via
    if method is None:
        method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC):
        return (branch, via.host.lower(), str(via.port), method)
    return (
        "rfc2543",
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(via),
        method,
    )
