"""Property test: random call flows between two cores over a lossy fake network always wind down
cleanly — once both applications hang up and time passes, no transaction, dialog or call is left."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.auth import Credentials, DigestServer
from sip.errors import DialogError
from sip.useragent import IncomingCall, InviteSession, OfferReceived, SessionState
from tests.sip.harness import FakeNet

A, B = 5070, 5071
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ACTIONS = [
    "call",
    "ring",
    "answer",
    "reject",
    "hangup_a",
    "hangup_b",
    "reinvite_a",
    "reinvite_b",
    "dtmf",
    "wait",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(ACTIONS), st.floats(0, 5)), max_size=15),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.booleans(),
)
def test_random_call_flows_with_loss_leave_nothing_behind(
    steps: list[tuple[str, float]], seed: int, loss: float, challenge: bool
) -> None:
    rng = random.Random(seed)
    net = FakeNet()
    a = net.add(A, session_expires=120, credentials=[Credentials("alice", "secret")])
    server = DigestServer("b.test", {"alice": "secret"}.get, clock=lambda: net.now) if challenge else None
    b = net.add(B, session_expires=None if challenge else 100, digest_server=server)
    net.drop = lambda data, src, dst: rng.random() < loss
    sessions_a: list[InviteSession] = []
    sessions_b: list[InviteSession] = []

    def collect() -> None:
        for ev in net.take(B):
            if isinstance(ev, IncomingCall):
                sessions_b.append(ev.session)
            elif isinstance(ev, OfferReceived):
                try:
                    b.accept_offer(ev.session, SDP, net.now)
                except DialogError:
                    pass
        for ev in net.take(A):
            if isinstance(ev, OfferReceived):
                try:
                    a.accept_offer(ev.session, SDP, net.now)
                except DialogError:
                    pass

    for action, dt in steps:
        try:
            if action == "call":
                sessions_a.append(a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP, net.now))
            elif sessions_b and action == "ring":
                b.ring(sessions_b[-1], net.now)
            elif sessions_b and action == "early":
                b.ring(sessions_b[-1], net.now, body=SDP, status=183)
            elif sessions_b and action == "dtmf_b":
                b.send_dtmf(sessions_b[-1], "#", net.now)
            elif sessions_b and action == "answer":
                b.answer(sessions_b[-1], SDP, net.now)
            elif sessions_b and action == "reject":
                b.reject(sessions_b[-1], 486, net.now)
            elif sessions_a and action == "hangup_a":
                a.hangup(sessions_a[-1], net.now)
            elif sessions_b and action == "hangup_b":
                b.hangup(sessions_b[-1], net.now)
            elif sessions_a and action == "reinvite_a":
                a.reinvite(sessions_a[-1], SDP + b"a=sendonly\r\n", net.now)
            elif sessions_b and action == "reinvite_b":
                b.reinvite(sessions_b[-1], SDP + b"a=sendonly\r\n", net.now)
            elif sessions_a and action == "dtmf":
                a.send_dtmf(sessions_a[-1], "5", net.now)
        except DialogError:
            pass
        net.flush()
        collect()
        net.advance(net.now + dt)
        collect()
    # Both applications hang up everything, then the network heals and time passes.
    for _ in range(3):
        for core, sessions in ((a, sessions_a), (b, sessions_b)):
            for s in sessions:
                if s.state is not SessionState.TERMINATED:
                    try:
                        core.hangup(s, net.now)
                    except DialogError:
                        pass
        net.flush()
        collect()
        net.advance(net.now + 40.0)
        collect()
    net.drop = None
    net.advance(net.now + 400.0)
    for core in (a, b):
        assert not core._client, core._client
        assert not core._server, core._server
        assert not core._dialogs, core._dialogs
        assert not core._calls, core._calls
        assert not core._merge
    for s in sessions_a + sessions_b:
        assert s.state is SessionState.TERMINATED
