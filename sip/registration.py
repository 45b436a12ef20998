"""Registration with a registrar (RFC 3261 §10.2) and OPTIONS keepalive of a trunk (§11).

Both are small clients on top of :class:`~sip.useragent.UserAgentCore`'s ``new_request``/``send_request``
and ``call_at``: they keep their own schedule in the core's timer heap and report through its event queue
(:class:`~sip.useragent.RegistrationStatus`, :class:`~sip.useragent.TrunkStatus`). Digest challenges to
REGISTER are answered by the core (same Call-ID, CSeq+1); every refresh is a new REGISTER that may be
challenged again (re-auth).
"""

from __future__ import annotations

from sip.errors import SipParseError
from sip.headers import NameAddr, parse_int
from sip.message import Response
from sip.transaction import ClientTransaction
from sip.uri import SipUri
from sip.useragent import RegistrationStatus, Target, Timer, TrunkStatus, UserAgentCore, new_token

#: retry delay after a failed REGISTER or while a trunk is down (seconds)
RETRY_AFTER = 60.0


def refresh_delay(granted: int) -> float:
    """When to refresh a binding of ``granted`` seconds: half-way for short bindings, otherwise two
    minutes ahead (more than one Timer F of 32 s, so a lost refresh still has time to retry)."""
    return max(granted / 2, granted - 120.0)


class Registration:
    """Keeps one AOR registered: REGISTER, refresh before expiry, re-register after failures.

    ``core.next_event()`` yields ``RegistrationStatus`` on every outcome (registered or not).
    """

    def __init__(self, core: UserAgentCore, registrar: str, aor: str, expires: int = 3600) -> None:
        self.core = core
        self.registrar = registrar
        self.aor = aor
        self.expires = expires
        self.call_id = f"{new_token()}@{core.config.local_host}"  # §10.2.4: same Call-ID for refreshes
        self.from_tag = new_token()
        self.cseq = 0
        self.registered = False
        self.granted = 0
        self.status = 0
        self._timer: Timer | None = None
        self._stopping = False

    def start(self, now: float) -> None:
        self._stopping = False
        self._send(now, self.expires)

    def stop(self, now: float) -> None:
        """Remove the binding (Expires: 0) and stop refreshing."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        self._send(now, 0)

    def _send(self, now: float, expires: int) -> None:
        self.cseq += 1
        request, target = self.core.new_request(
            "REGISTER",
            self.registrar,
            self.aor,
            self.aor,
            call_id=self.call_id,
            cseq=self.cseq,
            from_tag=self.from_tag,
            headers=[("Contact", self.core.contact), ("Expires", str(expires))],
        )
        self.core.send_request(request, target, self._on_response, now)

    def _schedule(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.core.call_at(at, lambda t: self._send(t, self.expires))

    def _on_response(self, txn: ClientTransaction, resp: Response | None, now: float) -> None:
        self.cseq = max(self.cseq, txn.request.cseq.number)
        if resp is not None and resp.status < 200:
            return
        status = resp.status if resp is not None else 408
        self.status = status
        if resp is not None and 200 <= status < 300:
            if self._stopping:
                self.registered = False
                self.granted = 0
            else:
                self.granted = self._granted(resp)
                self.registered = self.granted > 0
                self._schedule(now + refresh_delay(self.granted))
            self.core.emit(RegistrationStatus(self.registered, status, self.granted))
            return
        if resp is not None and status == 423 and not self._stopping:
            # §10.2.8: Interval Too Brief - retry at once with the registrar's minimum.
            try:
                self.expires = parse_int(resp.headers.get("Min-Expires") or "", "Min-Expires")
            except SipParseError:
                pass
            else:
                self._send(now, self.expires)
                return
        self.registered = False
        self.granted = 0
        self.core.emit(RegistrationStatus(False, status, 0))
        if not self._stopping:
            self._schedule(now + RETRY_AFTER)

    def _granted(self, resp: Response) -> int:
        """§10.2.4: the expiry the registrar granted our Contact (its ``expires`` param, else Expires)."""
        ours = NameAddr.parse(self.core.contact).uri
        fallback: int | None = None
        try:
            for contact in resp.contact:
                value = contact.params.get("expires")
                if value is None:
                    continue
                if isinstance(ours, SipUri) and contact.uri == ours:
                    return parse_int(value, "expires")
                fallback = parse_int(value, "expires") if fallback is None else fallback
            header = resp.headers.get("Expires")
            if header is not None:
                return parse_int(header, "Expires")
        except SipParseError:
            pass
        return fallback if fallback is not None else self.expires


class TrunkMonitor:
    """OPTIONS pings (§11) every ``interval`` seconds. Any final response except 408/503 means the
    trunk is up (a 404 or 405 still proves a live SIP stack); a timeout or 408/503 means down. Emits
    ``TrunkStatus`` when the state changes (and once at the first result)."""

    def __init__(self, core: UserAgentCore, uri: str, from_: str, interval: float = 30.0) -> None:
        self.core = core
        self.uri = uri
        self.from_ = from_
        self.interval = interval
        self.up: bool | None = None
        self.target: Target | None = None
        self._timer: Timer | None = None
        self._running = False

    def start(self, now: float) -> None:
        self._running = True
        self._ping(now)

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()

    def _ping(self, now: float) -> None:
        if not self._running:
            return
        request, target = self.core.new_request(
            "OPTIONS", self.uri, self.uri, self.from_, headers=[("Accept", "application/sdp")]
        )
        self.target = target
        self.core.send_request(request, target, self._on_response, now)

    def _on_response(self, txn: ClientTransaction, resp: Response | None, now: float) -> None:
        if resp is not None and resp.status < 200:
            return
        up = resp is not None and resp.status not in (408, 503)
        if up != self.up:
            self.up = up
            assert self.target is not None
            self.core.emit(TrunkStatus(self.target, up))
        if self._running:
            self._timer = self.core.call_at(now + self.interval, self._ping)
