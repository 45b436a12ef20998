"""Call flows between two sans-I/O user agent cores over a fake network and clock (§8, §9, §12-§15, §22)."""

from __future__ import annotations

import random

import pytest

from sip.auth import AllowList, Credentials, DigestServer
from sip.dialog import DialogState
from sip.errors import DialogError
from sip.message import Request, Response, make_response, parse_message
from sip.useragent import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    DtmfReceived,
    IncomingCall,
    InviteSession,
    OfferAnswered,
    OfferReceived,
    SessionState,
    Target,
    TargetUnreachable,
    UserAgentConfig,
    UserAgentCore,
)
from tests.sip.harness import FakeNet

A, B = 5070, 5071
SDP_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
SDP_ANSWER = SDP_OFFER.replace(b"4000", b"5000")


def setup(**b_kw: object) -> tuple[FakeNet, UserAgentCore, UserAgentCore]:
    net = FakeNet()
    a = net.add(A, credentials=[Credentials("alice", "secret")])
    b = net.add(B, **b_kw)
    return net, a, b


def call(net: FakeNet, a: UserAgentCore) -> InviteSession:
    session = a.invite(f"<sip:bob@127.0.0.1:{B}>", '"Alice" <sip:alice@127.0.0.1>', SDP_OFFER, net.now)
    net.flush()
    return session


def incoming(net: FakeNet) -> InviteSession:
    (ev,) = [e for e in net.take(B) if isinstance(e, IncomingCall)]
    return ev.session


def established(net: FakeNet, a: UserAgentCore, b: UserAgentCore) -> tuple[InviteSession, InviteSession]:
    sa = call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    assert [type(e) for e in net.take(A)] == [CallAnswered]
    assert [type(e) for e in net.take(B)] == [CallConfirmed]
    return sa, sb


def test_basic_call_ring_answer_and_bye_from_caller() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    assert sb.invite.body == SDP_OFFER
    assert sb.from_.display == "Alice"
    assert sb.request_uri == f"sip:bob@127.0.0.1:{B}"
    b.ring(sb, net.now)
    net.flush()
    (progress,) = net.take(A)
    assert isinstance(progress, CallProgress) and progress.status == 180
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    (answered,) = net.take(A)
    assert isinstance(answered, CallAnswered) and answered.body == SDP_ANSWER
    assert sa.state is SessionState.CONFIRMED and sa.dialog is not None
    assert sb.dialog is not None
    assert sa.dialog.id == (sb.dialog.call_id, sb.dialog.remote_tag, sb.dialog.local_tag)
    assert [type(e) for e in net.take(B)] == [CallConfirmed]
    assert net.requests("ACK") and not net.requests("INVITE")[1:]
    a.hangup(sa, net.now)
    net.flush()
    (ended_a,) = net.take(A)
    (ended_b,) = net.take(B)
    assert isinstance(ended_a, CallEnded) and not ended_a.remote
    assert isinstance(ended_b, CallEnded) and ended_b.remote and ended_b.reason == "BYE"
    net.advance(100.0)
    assert not a._client and not b._server  # every transaction reaped after its timers


def test_183_with_early_media_sdp_is_reported() -> None:
    net, a, b = setup()
    call(net, a)
    sb = incoming(net)
    b.ring(sb, net.now, body=SDP_ANSWER, status=183)
    net.flush()
    (ev,) = net.take(A)
    assert isinstance(ev, CallProgress) and ev.status == 183 and ev.body == SDP_ANSWER
    assert ev.content_type == "application/sdp"


def test_bye_from_callee() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    b.hangup(sb, net.now)
    net.flush()
    (ev,) = net.take(A)
    assert isinstance(ev, CallEnded) and ev.remote
    assert sa.state is SessionState.TERMINATED


def test_busy_486_ends_the_call_and_is_acked_in_transaction() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    b.reject(sb, 486, net.now)
    net.flush()
    (ev,) = net.take(A)
    assert isinstance(ev, CallEnded) and ev.status == 486 and ev.remote
    assert len(net.requests("ACK")) == 1
    assert sa.state is SessionState.TERMINATED
    net.advance(40.0)
    assert not a._client and not b._server


def test_cancel_while_ringing_gives_487_on_both_sides() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    b.ring(sb, net.now)
    net.flush()
    net.take(A)
    a.hangup(sa, net.now)
    net.flush()
    (ev_b,) = net.take(B)
    assert isinstance(ev_b, CallEnded) and ev_b.status == 487 and ev_b.remote
    (ev_a,) = net.take(A)
    assert isinstance(ev_a, CallEnded) and ev_a.status == 487
    cancel = [line for line in net.requests("CANCEL")]
    assert len(cancel) == 1


def test_cancel_before_any_provisional_waits_for_one() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"SIP/2.0 100")
    sa = call(net, a)
    sb = incoming(net)
    a.hangup(sa, net.now)
    net.flush()
    assert net.requests("CANCEL") == []  # §9.1: not before a provisional
    b.ring(sb, net.now)
    net.flush()
    assert len(net.requests("CANCEL")) == 1
    assert isinstance(net.take(A)[-1], CallEnded)


def test_200_racing_cancel_is_acked_then_byed() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    b.ring(sb, net.now)
    net.flush()
    # The CANCEL is lost; B answers; A must ACK and BYE the unwanted call.
    net.drop = lambda data, src, dst: data.startswith(b"CANCEL")
    a.hangup(sa, net.now)
    net.flush()
    net.drop = None
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    assert len(net.requests("ACK")) == 1 and len(net.requests("BYE")) == 1
    assert isinstance(net.take(B)[-1], CallEnded)


def test_invite_timeout_without_answer_ends_with_408() -> None:
    net, a, _ = setup()
    net.drop = lambda data, src, dst: dst == B
    call(net, a)
    net.advance(40.0)
    unreachable, ev = net.take(A)
    assert isinstance(unreachable, TargetUnreachable) and unreachable.target.port == B
    assert isinstance(ev, CallEnded) and ev.status == 408
    assert len(net.requests("INVITE")) == 7  # initial + 6 retransmissions of timer A


def test_lost_invite_and_lost_200_are_recovered_by_retransmission() -> None:
    net, a, b = setup()
    dropped: list[str] = []

    def drop(data: bytes, src: int, dst: int) -> bool:
        line = data.split(b"\r\n", 1)[0].decode()
        for victim in ("INVITE", "SIP/2.0 200"):
            if line.startswith(victim) and victim not in dropped:
                dropped.append(victim)
                return True
        return False

    net.drop = drop
    sa = call(net, a)
    net.advance(0.6)  # timer A retransmits the INVITE
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()  # first 200 lost
    net.advance(net.now + 0.6)  # the UAS retransmits the 2xx (§13.3.1.4)
    assert isinstance(net.take(A)[-1], CallAnswered)
    assert sa.state is SessionState.CONFIRMED
    assert dropped == ["INVITE", "SIP/2.0 200"]


def test_retransmitted_2xx_is_acked_again() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"ACK")
    sa, sb = (call(net, a), incoming(net))
    b.answer(sb, SDP_ANSWER, net.now)
    net.advance(2.0)
    acks = net.requests("ACK")
    assert len(acks) >= 3  # one per 200 received
    assert len({line for line in acks}) == 1
    answered = [e for e in net.take(A) if isinstance(e, CallAnswered)]
    assert len(answered) == 1 and sa.state is SessionState.CONFIRMED


def test_2xx_never_acked_tears_the_call_down_with_bye_after_64_t1() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"ACK")
    call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.advance(40.0)
    ended = [e for e in net.take(B) if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].status == 408
    assert len(net.requests("BYE", A)) == 1


def test_invite_challenged_with_401_is_retried_with_cseq_plus_one_and_same_call_id() -> None:
    server = DigestServer("trunk.example.com", {"alice": "secret"}.get)
    net, a, b = setup(digest_server=server)
    sa = call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    assert isinstance(net.take(A)[-1], CallAnswered)
    assert sb.invite.cseq.number == sa.invite.cseq.number
    assert sa.invite.headers.get("Authorization") is not None
    assert len(net.requests("INVITE")) == 2
    assert len(net.requests("ACK")) == 2  # in-transaction ACK for the 401, then the 2xx ACK


def test_retried_invite_keeps_call_id_from_tag_and_increments_cseq() -> None:
    server = DigestServer("trunk.example.com", {"alice": "secret"}.get)
    net, a, b = setup(digest_server=server)
    seen: list[Request] = []
    original = b.receive

    def spy(data: bytes, source: Target, now: float) -> None:
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method == "INVITE":
            seen.append(msg)
        original(data, source, now)

    b.receive = spy  # type: ignore[method-assign]
    call(net, a)
    first, second = seen
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    assert "Authorization" in second.headers and "Authorization" not in first.headers


def test_wrong_password_is_not_retried_forever() -> None:
    server = DigestServer("trunk.example.com", {"alice": "other"}.get)
    net, a, _ = setup(digest_server=server)
    call(net, a)
    net.advance(5.0)
    (ev,) = net.take(A)
    assert isinstance(ev, CallEnded) and ev.status == 401
    assert len(net.requests("INVITE")) == 2


PROXY_CHALLENGE = ("Proxy-Authenticate", 'Digest realm="p", nonce="n1", algorithm=SHA-256, qop="auth"')


def test_407_from_a_proxy_is_answered_with_proxy_authorization() -> None:
    _net, a, _ = setup()
    sa = a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0)
    ((data, _t),) = a.take_output()
    invite = parse_message(data)
    assert isinstance(invite, Request)
    challenge = make_response(invite, 407, to_tag="proxy", extra=[PROXY_CHALLENGE])
    a.receive(challenge.encode(), Target("UDP", "127.0.0.1", B), 0.1)
    out = [parse_message(d) for d, _ in a.take_output()]
    methods = [m.method for m in out if isinstance(m, Request)]
    assert methods == ["ACK", "INVITE"]
    retried = out[1]
    assert isinstance(retried, Request)
    auth = retried.headers.get("Proxy-Authorization") or ""
    assert 'realm="p"' in auth and "algorithm=SHA-256" in auth and "nc=00000001" in auth
    assert sa.invite is retried or sa.invite.cseq.number == retried.cseq.number
    # The same challenge again (same nonce, not stale) is given up on.
    challenge2 = make_response(retried, 407, to_tag="proxy", extra=[PROXY_CHALLENGE])
    a.receive(challenge2.encode(), Target("UDP", "127.0.0.1", B), 0.2)
    methods = [m.method for m in (parse_message(d) for d, _ in a.take_output()) if isinstance(m, Request)]
    assert methods == ["ACK"]
    ev = a.next_event()
    assert isinstance(ev, CallEnded) and ev.status == 407


def test_reinvite_for_hold_in_both_directions() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    hold = SDP_OFFER + b"a=sendonly\r\n"
    a.reinvite(sa, hold, net.now)
    net.flush()
    (offer,) = net.take(B)
    assert isinstance(offer, OfferReceived) and offer.body == hold and offer.method == "INVITE"
    b.accept_offer(sb, SDP_ANSWER + b"a=recvonly\r\n", net.now)
    net.flush()
    (answer,) = net.take(A)
    assert isinstance(answer, OfferAnswered) and answer.status == 200 and b"recvonly" in answer.body
    # and back, from the callee this time
    b.reinvite(sb, SDP_ANSWER, net.now)
    net.flush()
    (offer2,) = net.take(A)
    assert isinstance(offer2, OfferReceived)
    a.accept_offer(sa, SDP_OFFER, net.now)
    net.flush()
    (answer2,) = net.take(B)
    assert isinstance(answer2, OfferAnswered) and answer2.status == 200
    net.advance(net.now + 40.0)
    assert sa.state is SessionState.CONFIRMED and sb.state is SessionState.CONFIRMED
    # every 2xx to a re-INVITE was ACKed: no retransmission storm, no teardown
    assert not net.requests("BYE")


def test_reinvite_glare_gets_491_and_both_retry_after_random_delay() -> None:
    random.seed(7)
    net, a, b = setup()
    sa, sb = established(net, a, b)
    a.reinvite(sa, SDP_OFFER + b"a=sendonly\r\n", net.now)
    b.reinvite(sb, SDP_ANSWER + b"a=sendonly\r\n", net.now)
    net.flush()
    sent = [line for _, _, line in net.sent if line.startswith("SIP/2.0 491")]
    assert len(sent) == 2
    assert net.take(A) == [] and net.take(B) == []
    # The callee (not the Call-ID owner) retries within 0-2 s; the caller waits 2.1-4 s.
    for _ in range(20):
        net.advance(net.now + 0.5)
        for port, core, session in ((A, a, sa), (B, b, sb)):
            for ev in net.take(port):
                if isinstance(ev, OfferReceived):
                    core.accept_offer(session, ev.body, net.now)
                    net.flush()
    assert sa.reinvite_out is None and sb.reinvite_out is None
    assert len(net.requests("INVITE")) == 5  # initial + 2 glared + 2 retries


def test_second_reinvite_while_one_is_pending_is_refused_locally() -> None:
    net, a, b = setup()
    sa, _ = established(net, a, b)
    a.reinvite(sa, SDP_OFFER, net.now)
    with pytest.raises(DialogError):
        a.reinvite(sa, SDP_OFFER, net.now)


def test_dtmf_via_info_in_both_directions() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    for digit in "1#":
        a.send_dtmf(sa, digit, net.now, duration_ms=250)
    net.flush()
    evs = net.take(B)
    assert [(e.digit, e.duration_ms) for e in evs if isinstance(e, DtmfReceived)] == [("1", 250), ("#", 250)]
    b.send_dtmf(sb, "9", net.now)
    net.flush()
    assert [e.digit for e in net.take(A) if isinstance(e, DtmfReceived)] == ["9"]
    with pytest.raises(DialogError):
        a.send_dtmf(sa, "x", net.now)


def test_in_dialog_cseq_is_monotonic_in_both_directions() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    assert sa.dialog is not None and sb.dialog is not None
    start = sa.dialog.local_seq or 0
    a.send_dtmf(sa, "1", net.now)
    a.send_dtmf(sa, "2", net.now)
    net.flush()
    assert sa.dialog.local_seq == start + 2
    assert sb.dialog.remote_seq == start + 2
    b.send_dtmf(sb, "3", net.now)
    net.flush()
    assert sb.dialog.local_seq is not None and sa.dialog.remote_seq == sb.dialog.local_seq


def test_out_of_order_in_dialog_request_gets_500() -> None:
    net, a, b = setup()
    sa, _sb = established(net, a, b)
    assert sa.dialog is not None
    sa.dialog.local_seq = 1  # pretend we went backwards
    a.send_dtmf(sa, "1", net.now)
    net.flush()
    assert any(line.startswith("SIP/2.0 500") for _, _, line in net.sent)


def test_request_for_unknown_dialog_gets_481() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    b.hangup(sb, net.now)
    net.flush()
    # A's dialog is gone too; forge a BYE to B from the old dialog.
    assert sa.dialog is not None
    sa.dialog.state = DialogState.CONFIRMED
    a._send_bye(sa.dialog, sa, net.now)
    net.flush()
    assert any(line.startswith("SIP/2.0 481") for _, _, line in net.sent)


def test_merged_request_from_a_second_branch_gets_482() -> None:
    net, a, b = setup()
    call(net, a)
    (data,) = [d for d in _last_invite_bytes(a)]
    again = data.replace(b"branch=z9hG4bK", b"branch=z9hG4bKforked")
    b.receive(again, Target("UDP", "127.0.0.1", A), net.now)
    out = b.take_output()
    assert any(d.startswith(b"SIP/2.0 482") for d, _ in out)


def _last_invite_bytes(a: UserAgentCore) -> list[bytes]:
    txns = [t for t in a._client.values() if t.request.method == "INVITE"]
    return [txns[-1].request.encode()]


def test_allow_list_refuses_other_sources_with_403() -> None:
    net, a, _b = setup(allow_list=AllowList(["10.0.0.0/8"]))
    call(net, a)
    assert net.take(B) == []
    assert any(line.startswith("SIP/2.0 403") for _, _, line in net.sent)


def test_malformed_request_is_answered_400_and_garbage_dropped() -> None:
    _net, _a, b = setup()
    bad = (
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n"
    )
    b.receive(bad, Target("UDP", "127.0.0.1", 40000), 0.0)
    ((data, target),) = b.take_output()
    assert data.startswith(b"SIP/2.0 400 CSeq method does not match")
    assert target == Target("UDP", "127.0.0.1", 40000)  # rport honoured
    b.receive(b"\x00garbage\r\n\r\n", Target("UDP", "127.0.0.1", 40000), 0.0)
    assert b.take_output() == []
    assert b.stats["parse_errors"] == 2


def test_response_goes_to_received_and_rport_of_the_source() -> None:
    _, _, b = setup()
    req = (
        b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKo1;rport\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
    )
    b.receive(req, Target("UDP", "127.0.0.1", 40001), 0.0)
    ((data, target),) = b.take_output()
    resp = parse_message(data)
    assert isinstance(resp, Response) and resp.status == 200
    assert resp.top_via.params["received"] == "127.0.0.1" and resp.top_via.params["rport"] == "40001"
    assert target == Target("UDP", "127.0.0.1", 40001)
    assert "INVITE" in (resp.headers.get("Allow") or "")


def test_response_without_rport_goes_to_received_and_via_port() -> None:
    _, _, b = setup()
    req = (
        b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKo2\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: o2\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    b.receive(req, Target("UDP", "127.0.0.1", 40001), 0.0)
    ((_, target),) = b.take_output()
    assert target == Target("UDP", "127.0.0.1", 5062)


def test_requests_we_send_ask_for_rport_over_udp_only() -> None:
    _, a, _ = setup()
    a.invite(f"<sip:bob@127.0.0.1:{B};transport=tcp>", "<sip:alice@127.0.0.1>", b"", 0.0)
    ((data, target),) = a.take_output()
    assert target.transport == "TCP"
    msg = parse_message(data)
    assert msg.top_via.transport == "TCP" and "rport" not in msg.top_via.params


def test_unsupported_require_gets_420() -> None:
    net, a, _b = setup()
    a.invite(
        f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0, headers=[("Require", "100rel")]
    )
    net.flush()
    assert any(line.startswith("SIP/2.0 420") for _, _, line in net.sent)
    assert isinstance(net.take(A)[-1], CallEnded)


def test_incoming_call_exposes_p_asserted_identity() -> None:
    net, a, _ = setup()
    a.invite(
        f"<sip:+15551234@127.0.0.1:{B}>",
        "<sip:anonymous@anonymous.invalid>",
        SDP_OFFER,
        0.0,
        headers=[("P-Asserted-Identity", '"Carol" <sip:+15550001@carrier.example>, <tel:+15550001>')],
    )
    net.flush()
    sb = incoming(net)
    assert [str(p.uri) for p in sb.p_asserted_identity] == ["sip:+15550001@carrier.example", "tel:+15550001"]


def test_callee_hanging_up_before_the_ack_sends_bye_only_after_it() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"ACK")
    call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    b.hangup(sb, net.now)
    net.flush()
    assert net.requests("BYE") == []  # §15: not before the ACK
    assert isinstance(net.take(B)[-1], CallEnded)
    net.drop = None
    net.advance(net.now + 0.6)  # the retransmitted 2xx is ACKed; now the BYE goes out
    assert len(net.requests("BYE")) == 1
    assert isinstance(net.take(A)[-1], CallEnded)


def test_finished_calls_leave_no_dialog_state_behind() -> None:
    net, a, b = setup()
    for status in (486, 200):
        sa = call(net, a)
        sb = incoming(net)
        if status == 486:
            b.reject(sb, 486, net.now)
        else:
            b.answer(sb, SDP_ANSWER, net.now)
            net.flush()
            a.hangup(sa, net.now)
        net.flush()
    net.advance(net.now + 60.0)
    for core in (a, b):
        assert (
            not core._dialogs
            and not core._calls
            and not core._client
            and not core._server
            and not core._merge
        )


def test_callee_hangup_without_any_ack_sends_bye_when_the_2xx_times_out() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"ACK")
    call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    b.hangup(sb, net.now)
    net.advance(40.0)
    assert len(net.requests("BYE")) == 1
    assert not b._dialogs


def test_outbound_proxy_receives_out_of_dialog_requests_with_the_request_uri_unchanged() -> None:
    net = FakeNet()
    a = net.add(A, outbound_proxy=Target("UDP", "127.0.0.1", B))
    net.add(B)
    a.invite("<sip:+15551234@carrier.example.com>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0)
    net.flush()
    sb = incoming(net)
    assert sb.request_uri == "sip:+15551234@carrier.example.com"
    assert net.requests("INVITE", B)


def test_late_offer_answer_arrives_in_the_ack() -> None:
    net, a, b = setup()
    net.drop = lambda data, src, dst: data.startswith(b"ACK")  # stand in for a late-offer caller
    sa = a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", b"", 0.0)
    net.flush()
    sb = incoming(net)
    assert sb.invite.body == b""
    b.answer(sb, SDP_ANSWER, net.now)  # our offer, in the 2xx
    net.flush()
    (answered,) = net.take(A)
    assert isinstance(answered, CallAnswered) and answered.body == SDP_ANSWER
    assert sa.dialog is not None
    # A late-offer caller puts its answer in the ACK (our UAC core always offers in the INVITE).
    ack = sa.dialog.create_request("ACK", f"SIP/2.0/UDP 127.0.0.1:{A};branch=z9hG4bKlate", None,
                                   SDP_OFFER, "application/sdp", cseq=sa.invite.cseq.number)  # fmt: skip
    b.receive(ack.encode(), Target("UDP", "127.0.0.1", A), net.now)
    ev = b.next_event()
    assert isinstance(ev, CallConfirmed) and ev.body == SDP_OFFER


def _raw_request(method: str, ruri: str, extra: str = "") -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{len(ruri)}\r\n"
        f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: {method}-{len(ruri)}\r\n"
        f"CSeq: 1 {method}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (_raw_request("OPTIONS", "nobodyknowsthisscheme:totallyopaque"), 416),
        (_raw_request("INVITE", "nobodyknowsthisscheme:totallyopaque"), 416),
        (_raw_request("INVITE", "sip:b@127.0.0.1", "Max-Forwards: 0\r\n"), 483),
        (_raw_request("OPTIONS", "sip:b@127.0.0.1", "Max-Forwards: 0\r\n"), 200),
        (_raw_request("OPTIONS", "tel:+15551234"), 200),
        (_raw_request("SUBSCRIBE", "sip:b@127.0.0.1"), 501),
        (_raw_request("BYE", "sip:b@127.0.0.1"), 481),
        (_raw_request("REGISTER", "sip:127.0.0.1"), 405),
        (_raw_request("INVITE", "sip:b@127.0.0.1", "Require: foo, bar\r\n"), 420),
    ],
)
def test_requests_the_uas_refuses_or_answers_directly(raw: bytes, status: int) -> None:
    _, _, b = setup()
    b.receive(raw, Target("UDP", "127.0.0.1", A), 0.0)
    finals = [parse_message(d) for d, _ in b.take_output()]
    codes = [m.status for m in finals if isinstance(m, Response) and m.status >= 200]
    assert codes == [status]


def test_forged_received_and_rport_are_overwritten_with_the_real_source() -> None:
    _, _, b = setup()
    req = (
        b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf1;received=192.0.2.66;rport=9\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: f1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    b.receive(req, Target("UDP", "127.0.0.1", 40002), 0.0)
    ((_, target),) = b.take_output()
    assert target == Target("UDP", "127.0.0.1", 40002)


def test_2xx_retransmitted_after_our_bye_is_acked_not_byed_again() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    net.drop = lambda data, src, dst: data.startswith(b"ACK") and dst == B
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    a.hangup(sa, net.now)
    net.flush()
    net.advance(net.now + 3.0)  # B keeps retransmitting its 2xx (no ACK got through)
    assert len(net.requests("BYE")) == 1
    assert len(net.requests("ACK")) >= 2


def test_pending_reinvite_gets_487_when_the_call_ends_and_nothing_leaks() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    a.reinvite(sa, SDP_OFFER + b"a=sendonly\r\n", net.now)
    net.flush()
    assert isinstance(net.take(B)[-1], OfferReceived)  # B's application never answers it
    b.hangup(sb, net.now)
    net.flush()
    assert any(line.startswith("SIP/2.0 487") for _, _, line in net.sent)
    assert (
        any(isinstance(e, OfferAnswered) and e.status == 487 for e in net.take(A))
        or sa.state is SessionState.TERMINATED
    )
    net.advance(net.now + 100.0)
    for core in (a, b):
        assert not core._server and not core._client and not core._dialogs


def test_client_learns_its_public_address_from_received_and_rport() -> None:
    net = FakeNet()
    a = net.add(A, contact_from_observed=True)
    net.add(B)
    # A believes it is 10.0.0.5 (private); B sees it as 127.0.0.1:5070.
    a.config.local_host = "10.0.0.5"
    a.invite(f"<sip:bob@127.0.0.1:{B}>", "<sip:alice@127.0.0.1>", SDP_OFFER, 0.0)
    net.flush()
    assert a.observed_address == ("127.0.0.1", A)
    assert a.contact == f"<sip:telebridge@127.0.0.1:{A}>"


def test_reinvite_without_offer_gets_our_offer_and_the_answer_comes_in_the_ack() -> None:
    net, a, b = setup()
    sa, sb = established(net, a, b)
    net.drop = lambda data, src, dst: data.startswith(b"ACK")
    a.reinvite(sa, b"", net.now)  # an offerless re-INVITE ("send me your offer")
    net.flush()
    (offer_req,) = net.take(B)
    assert isinstance(offer_req, OfferReceived) and offer_req.body == b""
    b.accept_offer(sb, SDP_ANSWER, net.now)  # B offers in the 2xx
    net.flush()
    (ours,) = net.take(A)
    assert isinstance(ours, OfferAnswered) and ours.body == SDP_ANSWER
    assert sa.dialog is not None
    ack = sa.dialog.create_request("ACK", f"SIP/2.0/UDP 127.0.0.1:{A};branch=z9hG4bKra", None, SDP_OFFER,
                                   "application/sdp", cseq=sa.dialog.local_seq)  # fmt: skip
    b.receive(ack.encode(), Target("UDP", "127.0.0.1", A), net.now)
    ev = b.next_event()
    assert isinstance(ev, OfferAnswered) and ev.body == SDP_OFFER


def test_cancelled_long_timers_do_not_pile_up_in_the_timer_heap() -> None:
    """Under load a short live timer always sits at the top of the heap, so lazily deleted entries
    below it (cancelled 900 s session-timer refreshes) would accumulate without compaction."""
    core = UserAgentCore(UserAgentConfig("127.0.0.1", 5070))
    fired: list[float] = []
    core.call_at(1.0, fired.append)  # the live timer on top
    for i in range(5000):
        core.call_at(900.0 + i, fired.append).cancel()
    assert len(core._heap) < 2100
    assert core.get_timer() == 1.0
    core.handle_timer(10000.0)
    assert fired == [10000.0] and core.get_timer() is None  # only the live one fired


def test_second_fork_2xx_is_acked_and_byed_while_the_first_call_stays_up() -> None:
    net, a, b = setup()
    sa = call(net, a)
    sb = incoming(net)
    b.answer(sb, SDP_ANSWER, net.now)
    net.flush()
    assert isinstance(net.take(A)[-1], CallAnswered)
    # A forking proxy delivers a 200 from another branch of the fork (another To tag).
    invite = sa.invite
    fork = make_response(invite, 200, to_tag="fork2", extra=[("Contact", "<sip:other@127.0.0.1:5099>")])
    a.receive(fork.encode(), Target("UDP", "127.0.0.1", B), net.now)
    sent = [parse_message(d) for d, _ in a.take_output()]
    assert [m.method for m in sent if isinstance(m, Request)] == ["ACK", "BYE"]
    assert all(m.to.tag == "fork2" for m in sent)
    assert sa.state is SessionState.CONFIRMED and sa.dialog is not None and sa.dialog.remote_tag != "fork2"
    assert net.take(A) == []


def test_uas_routes_in_dialog_requests_through_the_record_route_set() -> None:
    _, _, b = setup()
    invite = (
        b"INVITE sip:bob@127.0.0.1:5071 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKproxy1\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaller\r\n"
        b"Record-Route: <sip:127.0.0.1:5080;lr>, <sip:edge.example.com;lr>\r\n"
        b"From: <sip:carol@example.com>;tag=c1\r\nTo: <sip:bob@example.com>\r\nCall-ID: rr1\r\n"
        b"CSeq: 5 INVITE\r\nContact: <sip:carol@192.0.2.1>\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    )
    b.receive(invite, Target("UDP", "127.0.0.1", 5080), 0.0)
    ev = b.next_event()
    assert isinstance(ev, IncomingCall)
    b.take_output()
    b.answer(ev.session, SDP_ANSWER, 0.0)
    ((data, target),) = b.take_output()
    ok = parse_message(data)
    assert isinstance(ok, Response)
    assert ok.headers.get_all("Record-Route") == ["<sip:127.0.0.1:5080;lr>", "<sip:edge.example.com;lr>"]
    assert [v.host for v in ok.via] == ["127.0.0.1", "192.0.2.1"]
    assert target == Target("UDP", "127.0.0.1", 5080)
    b.hangup(ev.session, 0.0)  # before the ACK: deferred (§15) ...
    ack = (
        "ACK sip:telebridge@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKproxy2\r\n"
        f"From: <sip:carol@example.com>;tag=c1\r\nTo: <sip:bob@example.com>;tag={ev.session.local_tag}\r\n"
        "Call-ID: rr1\r\nCSeq: 5 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    b.receive(ack, Target("UDP", "127.0.0.1", 5080), 0.1)  # ... until the ACK arrives
    ((data, target),) = b.take_output()
    bye = parse_message(data)
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:carol@192.0.2.1"  # the remote target
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.1:5080;lr>", "<sip:edge.example.com;lr>"]
    assert target == Target("UDP", "127.0.0.1", 5080)  # the first route, not the remote target


def test_reason_header_of_a_bye_reaches_call_ended() -> None:
    net, a, b = setup()
    _, sb = established(net, a, b)
    assert sb.dialog is not None
    bye = sb.dialog.create_request(
        "BYE", f"SIP/2.0/UDP 127.0.0.1:{B};branch=z9hG4bKreason", None,
        extra=[("Reason", 'Q.850;cause=16;text="Normal call clearing"')],
    )  # fmt: skip
    a.receive(bye.encode(), Target("UDP", "127.0.0.1", B), net.now)
    ev = a.next_event()
    assert isinstance(ev, CallEnded) and ev.cause == 'Q.850;cause=16;text="Normal call clearing"'


def test_hangup_cause_goes_out_as_reason_on_bye_and_cancel() -> None:
    net, a, b = setup()
    sa, _ = established(net, a, b)
    a.hangup(sa, net.now, cause="Q.850;cause=16")
    net.flush()
    assert [e.cause for e in net.take(B) if isinstance(e, CallEnded)] == ["Q.850;cause=16"]
    sa2 = call(net, a)
    sb2 = incoming(net)
    b.ring(sb2, net.now)
    net.flush()
    a.hangup(sa2, net.now, cause='SIP;cause=200;text="Call completed elsewhere"')
    net.flush()
    ended = [e for e in net.take(B) if isinstance(e, CallEnded)]
    assert ended[0].status == 487 and ended[0].cause == 'SIP;cause=200;text="Call completed elsewhere"'


def test_incoming_call_never_answered_is_refused_with_480_after_the_answer_timeout() -> None:
    net, a, _ = setup(answer_timeout=60.0)
    call(net, a)
    sb = incoming(net)
    net.advance(59.0)
    assert sb.state is SessionState.INCOMING
    net.advance(61.0)
    assert sb.state is SessionState.TERMINATED
    ended = [e for e in net.take(A) if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].status == 480


def test_a_restored_dialog_ends_the_peers_call_with_a_bye_after_a_restart() -> None:
    import json

    from sip.dialog import Dialog

    net, a, b = setup()
    sa, sb = established(net, a, b)
    assert sa.dialog is not None and sb.dialog is not None
    snapshot = json.loads(json.dumps(sa.dialog.snapshot()))  # as the bridge stores it
    restarted = net.add(5072)  # a new process, nothing of the call in memory
    restarted.end_stale_dialog(Dialog.restore(snapshot), net.now, 'Q.850;cause=41;text="Temporary failure"')
    net.flush()
    (ended,) = net.take(B)
    assert isinstance(ended, CallEnded) and ended.remote and ended.reason == "BYE"
    assert net.requests("BYE", to_port=B)
    assert sb.dialog.remote_seq is not None and sb.dialog.remote_seq > sa.invite.cseq.number  # §12.2.2
    with pytest.raises(DialogError):
        Dialog.restore({"call_id": "x"})
