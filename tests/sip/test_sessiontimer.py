"""RFC 4028 session timers between two cores on the fake network and clock."""

from __future__ import annotations

import pytest

from sip.errors import SipParseError
from sip.message import Request, parse_message
from sip.sessiontimer import expire_after, parse_session_expires, refresh_after
from sip.useragent import CallAnswered, CallEnded, OfferAnswered, OfferReceived, SessionState
from tests.sip.harness import FakeNet
from tests.sip.test_useragent import SDP_ANSWER, SDP_OFFER

A, B = 5070, 5071


def established(net: FakeNet) -> tuple:  # type: ignore[type-arg]
    a, b = net.nodes[("127.0.0.1", A)], net.nodes[("127.0.0.1", B)]
    sa = a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, net.now)
    net.flush()
    (inc,) = net.take(B)
    sb = inc.session  # type: ignore[attr-defined]
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    assert isinstance(net.take(A)[-1], CallAnswered)
    net.take(B)
    return a, b, sa, sb


def test_session_expires_parsing() -> None:
    assert parse_session_expires("1800;refresher=UAC") == (1800, "uac")
    assert parse_session_expires("0090") == (90, None)
    with pytest.raises(SipParseError):
        parse_session_expires("1800;refresher=both")
    assert refresh_after(1800) == 900
    assert expire_after(1800) == 1768
    assert expire_after(90) == 60


def test_uac_refreshes_with_update_and_the_call_outlives_many_intervals() -> None:
    net = FakeNet()
    net.add(A, session_expires=1800)
    net.add(B)
    _, _, sa, sb = established(net)
    assert sa.se == 1800 and sa.refresher_us and not sb.refresher_us
    net.advance(5000.0)
    updates = net.requests("UPDATE")
    assert len(updates) == 5  # at 900, 1800, ... 4500 s
    assert sa.state is SessionState.CONFIRMED and sb.state is SessionState.CONFIRMED
    assert net.take(A) == [] and net.take(B) == []


def test_answer_carries_session_expires_and_require_timer() -> None:
    net = FakeNet()
    a = net.add(A, session_expires=600)
    b = net.add(B)
    a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0)
    net.flush()
    sb = net.take(B)[0].session  # type: ignore[attr-defined]
    b.answer(sb, SDP_ANSWER, 0.0)
    (data, _), *_ = b.take_output()
    resp = parse_message(data)
    assert resp.headers.get("Session-Expires") == "600;refresher=uac"
    assert "timer" in resp.headers.get_all("Require")


def test_missing_refresh_makes_the_other_side_hang_up() -> None:
    net = FakeNet()
    net.add(A, session_expires=300)
    net.add(B)
    _, _, sa, _sb = established(net)
    assert sa.st_timer is not None
    sa.st_timer.cancel()  # the refresher forgets to refresh
    net.advance(300.0)
    ended = [e for e in net.take(B) if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].reason == "session timer expired"
    assert any(isinstance(e, CallEnded) and e.remote for e in net.take(A))


def test_refresh_by_reinvite_when_peer_does_not_allow_update_is_answered_silently() -> None:
    net = FakeNet()
    net.add(A, session_expires=200)
    net.add(B)
    _, _, sa, sb = established(net)
    sa.peer_allow = ["INVITE", "ACK", "BYE", "CANCEL"]  # as if the callee's 2xx had no UPDATE
    assert sb.refresher_us is False
    net.advance(250.0)
    invites = net.requests("INVITE")
    assert len(invites) == 3  # initial + 2 refreshes at 100 s and 200 s
    assert not net.requests("UPDATE")
    assert [e for e in net.take(B) if isinstance(e, OfferReceived)] == []  # unchanged SDP: no app work
    assert net.take(A) == []
    assert sa.state is SessionState.CONFIRMED


def test_interval_below_min_se_is_refused_with_422_and_retried_higher() -> None:
    net = FakeNet()
    a = net.add(A, session_expires=100)
    net.add(B, min_se=1200)
    seen: list[Request] = []
    b = net.nodes[("127.0.0.1", B)]
    original = b.receive

    def spy(data: bytes, source, now: float) -> None:  # type: ignore[no-untyped-def]
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method == "INVITE":
            seen.append(msg)
        original(data, source, now)

    b.receive = spy  # type: ignore[method-assign]
    sa = a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0)
    net.flush()
    assert [m.headers.get("Session-Expires") for m in seen] == ["100", "1200"]
    assert seen[1].cseq.number == seen[0].cseq.number + 1 and seen[1].call_id == seen[0].call_id
    assert sa.se == 1200


def test_uas_refreshes_when_caller_does_not_support_timers() -> None:
    net = FakeNet()
    net.add(A, session_expires=None)
    net.add(B, session_expires=400, impose_session_timer=True)
    _, _, sa, sb = established(net)
    assert sb.se == 400 and sb.refresher_us
    net.advance(1000.0)
    assert len([line for _, d, line in net.sent if d == A and line.startswith(("UPDATE", "INVITE"))]) == 5
    assert sa.state is SessionState.CONFIRMED


def test_a_refresh_due_while_the_peers_offer_waits_for_the_application_leaves_that_offer_alone() -> None:
    net = FakeNet()
    net.add(A, session_expires=1800)
    net.add(B)
    a, b, sa, sb = established(net)
    b.reinvite(sb, SDP_ANSWER.replace(b"5000", b"5002"), net.now)  # the callee holds, say
    net.flush()
    assert [type(e) for e in net.take(A)] == [OfferReceived]
    a._refresh_session(sa, net.now)  # our refresh falls due: it must wait, not answer the offer
    net.flush()
    assert net.take(B) == [] and sa.offer_in is not None
    a.accept_offer(sa, SDP_OFFER, net.now)
    net.flush()
    (answered,) = [e for e in net.take(B) if isinstance(e, OfferAnswered)]
    assert answered.status == 200
