"""REGISTER with refresh and re-auth (§10.2) and OPTIONS keepalive (§11), with a scripted registrar on
the fake network and clock."""

from __future__ import annotations

from sip.auth import Credentials, DigestServer
from sip.message import Request, Response, make_response, parse_message
from sip.registration import Registration, TrunkMonitor, refresh_delay
from sip.useragent import Event, RegistrationStatus, Target, TrunkStatus
from tests.sip.harness import FakeNet

UA, REGISTRAR = 5070, 5090


class FakeRegistrar:
    """Challenges every REGISTER without valid credentials, then grants ``grant`` seconds (or asks for
    ``min_expires`` with 423). ``silent`` makes it drop everything (a dead trunk)."""

    def __init__(self, grant: int = 60, min_expires: int | None = None) -> None:
        self.digest = DigestServer("reg.test", {"alice": "secret"}.get, clock=lambda: 0.0)
        self.grant = grant
        self.min_expires = min_expires
        self.silent = False
        self.requests: list[Request] = []
        self._out: list[tuple[bytes, Target]] = []

    def receive(self, data: bytes, source: Target, now: float) -> None:
        req = parse_message(data)
        assert isinstance(req, Request)
        self.requests.append(req)
        if self.silent:
            return
        if req.method == "OPTIONS":
            resp = make_response(req, 200, to_tag="r")
        elif not any(self.digest.verify(v, "REGISTER")[0] for v in req.headers.get_all("Authorization")):
            resp = make_response(req, 401, to_tag="r", extra=[("WWW-Authenticate", self.digest.challenge())])
        elif self.min_expires and int(req.headers.get("Expires") or 0) < self.min_expires:
            resp = make_response(req, 423, to_tag="r", extra=[("Min-Expires", str(self.min_expires))])
        else:
            asked = int(req.headers.get("Expires") or 0)
            granted = min(asked, self.grant)
            contact = req.headers.get("Contact") or ""
            resp = make_response(req, 200, to_tag="r", extra=[("Contact", f"{contact};expires={granted}")])
        self._out.append((resp.encode(), source))

    def take_output(self) -> list[tuple[bytes, Target]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None


def setup(registrar: FakeRegistrar) -> tuple[FakeNet, Registration]:
    net = FakeNet()
    core = net.add(UA, credentials=[Credentials("alice", "secret")])
    net.nodes[("127.0.0.1", REGISTRAR)] = registrar  # type: ignore[assignment]
    reg = Registration(core, f"sip:127.0.0.1:{REGISTRAR}", "<sip:alice@reg.test>", expires=3600)
    return net, reg


def statuses(net: FakeNet) -> list[tuple[bool, int, int]]:
    return [(e.registered, e.status, e.expires) for e in net.take(UA) if isinstance(e, RegistrationStatus)]


def test_register_is_challenged_answered_and_refreshed_before_expiry_with_re_auth() -> None:
    registrar = FakeRegistrar(grant=60)
    net, reg = setup(registrar)
    reg.start(net.now)
    net.flush()
    assert statuses(net) == [(True, 200, 60)]
    first, second = registrar.requests
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    assert second.from_.tag == first.from_.tag
    net.advance(29.0)
    assert len(registrar.requests) == 2
    net.advance(31.0)  # refresh at 30 s: challenged again and re-authenticated
    assert statuses(net) == [(True, 200, 60)]
    assert len(registrar.requests) == 4
    numbers = [r.cseq.number for r in registrar.requests]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert {r.call_id for r in registrar.requests} == {first.call_id}


def test_register_423_retries_with_min_expires() -> None:
    registrar = FakeRegistrar(grant=7200, min_expires=7200)
    net, reg = setup(registrar)
    reg.expires = 60
    reg.start(net.now)
    net.flush()
    assert statuses(net) == [(True, 200, 7200)]
    assert registrar.requests[-1].headers.get("Expires") == "7200"


def test_register_without_answer_reports_failure_and_retries() -> None:
    registrar = FakeRegistrar()
    registrar.silent = True
    net, reg = setup(registrar)
    reg.start(net.now)
    net.advance(40.0)
    assert statuses(net) == [(False, 408, 0)]
    registrar.silent = False
    net.advance(100.0)
    assert statuses(net) == [(True, 200, 60)]


def test_unregister_sends_expires_zero() -> None:
    registrar = FakeRegistrar()
    net, reg = setup(registrar)
    reg.start(net.now)
    net.flush()
    reg.stop(net.now)
    net.flush()
    assert registrar.requests[-1].headers.get("Expires") == "0"
    assert statuses(net)[-1] == (False, 200, 0)
    net.advance(10000.0)
    assert registrar.requests[-1].headers.get("Expires") == "0"  # no more refreshes


def test_refresh_delay_leaves_room_for_a_retransmitting_refresh() -> None:
    assert refresh_delay(60) == 30
    assert refresh_delay(3600) == 3480


def test_options_keepalive_marks_trunk_up_and_down() -> None:
    registrar = FakeRegistrar()
    net, reg = setup(registrar)
    monitor = TrunkMonitor(reg.core, f"sip:127.0.0.1:{REGISTRAR}", "<sip:ping@127.0.0.1>", interval=10)
    monitor.start(net.now)
    net.flush()
    assert [(e.up) for e in net.take(UA) if isinstance(e, TrunkStatus)] == [True]
    net.advance(25.0)
    assert [r.method for r in registrar.requests] == ["OPTIONS"] * 3
    assert net.take(UA) == []  # no change, no event
    registrar.silent = True
    net.advance(80.0)
    assert [(e.up) for e in net.take(UA) if isinstance(e, TrunkStatus)] == [False]
    registrar.silent = False
    net.advance(130.0)
    assert [(e.up) for e in net.take(UA) if isinstance(e, TrunkStatus)] == [True]
    monitor.stop()
    count = len(registrar.requests)
    net.advance(1000.0)
    assert len(registrar.requests) == count


def test_send_request_hands_the_final_response_to_its_handler() -> None:
    registrar = FakeRegistrar()
    net, reg = setup(registrar)
    core = reg.core
    request, target = core.new_request("OPTIONS", f"sip:127.0.0.1:{REGISTRAR}", "<sip:x@y>", "<sip:a@b>")
    seen: list[int] = []
    core.send_request(
        request, target, lambda t, r, now: seen.append(r.status if isinstance(r, Response) else 0), 0.0
    )
    net.flush()
    assert seen == [200]
