"""RFC 3261 §17 transaction state machines, driven by a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import itertools

import pytest

from sip.errors import TransactionError
from sip.message import Request, Response, make_response, parse_message
from sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    TimerConfig,
    Transaction,
    build_cancel,
    client_key,
    new_branch,
    server_key,
)

CFG = TimerConfig()  # T1 = 0.5, T2 = 4, T4 = 5


def request(method: str = "INVITE", branch: str | None = None) -> Request:
    branch = branch or new_branch()
    return Request(
        method,
        "sip:bob@127.0.0.1:5070",
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", "call-1@127.0.0.1"),
            ("CSeq", f"7 {method}"),
            ("Route", "<sip:proxy.example.com;lr>"),
        ],
    )


def run_until(txn: Transaction, end: float) -> list[float]:
    """Fire timers up to ``end``; return the times at which something was sent."""
    sent: list[float] = []
    while True:
        at = txn.get_timer()
        if at is None or at > end:
            return sent
        txn.handle_timer(at)
        sent.extend(at for _ in txn.take_output())


def test_invite_client_retransmits_with_timer_a_doubling_and_times_out_with_timer_b() -> None:
    txn = InviteClientTransaction(request(), reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    assert len(txn.take_output()) == 1
    sent = run_until(txn, 100.0)
    # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (doubling, not capped at T2); B fires at 32 s.
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert txn.terminated and txn.timed_out


def test_invite_client_over_reliable_transport_never_retransmits() -> None:
    txn = InviteClientTransaction(request(), reliable=True, destination=None, config=CFG)
    txn.start(0.0)
    txn.take_output()
    assert run_until(txn, 100.0) == []
    assert txn.timed_out


def test_invite_client_provisional_stops_retransmission_and_timeout() -> None:
    req = request()
    txn = InviteClientTransaction(req, reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    txn.take_output()
    txn.receive(make_response(req, 180, to_tag="b1"), 0.2)
    assert txn.state is State.PROCEEDING
    assert [r.status for r in txn.responses] == [180]
    assert run_until(txn, 500.0) == []
    assert not txn.terminated  # proceeding waits for the final response as long as the TU wants


def test_invite_client_acks_error_response_in_transaction_and_absorbs_retransmissions() -> None:
    req = request()
    txn = InviteClientTransaction(req, reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    txn.take_output()
    busy = make_response(req, 486, to_tag="b1")
    txn.receive(busy, 0.1)
    (ack_bytes,) = txn.take_output()
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.top_via.branch == req.top_via.branch
    assert ack.uri == req.uri
    assert ack.to.tag == "b1"
    assert ack.cseq == (7, "ACK")
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert txn.state is State.COMPLETED
    txn.receive(busy, 0.6)  # retransmitted 486: ACK again, not passed to the TU
    assert txn.take_output() == [ack_bytes]
    assert [r.status for r in txn.responses] == [486]
    run_until(txn, 0.1 + 32.0)  # timer D = 32 s
    assert txn.terminated and not txn.timed_out


def test_invite_client_2xx_enters_accepted_and_passes_retransmitted_2xx_up() -> None:
    req = request()
    txn = InviteClientTransaction(req, reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    ok = make_response(req, 200, to_tag="b1")
    txn.receive(ok, 0.1)
    txn.receive(ok, 0.6)
    assert txn.state is State.ACCEPTED
    assert [r.status for r in txn.responses] == [200, 200]  # the TU re-sends its ACK each time
    assert txn.take_output() == [req.encode()]  # no ACK from the transaction for 2xx
    run_until(txn, 0.1 + 64 * 0.5)
    assert txn.terminated and not txn.timed_out


def test_non_invite_client_timer_e_is_capped_at_t2_and_f_times_out() -> None:
    txn = NonInviteClientTransaction(request("OPTIONS"), reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    txn.take_output()
    sent = run_until(txn, 40.0)
    assert sent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, 4, 4 ...
    assert all(b - a == pytest.approx(4.0) for a, b in itertools.pairwise(sent[3:]))
    assert max(sent) < 32.0
    assert txn.terminated and txn.timed_out


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    req = request("BYE")
    txn = NonInviteClientTransaction(req, reliable=False, destination=None, config=CFG)
    txn.start(0.0)
    txn.take_output()
    txn.receive(make_response(req, 100), 0.1)
    sent = run_until(txn, 12.0)
    assert sent == [0.5, 4.5, 8.5]
    txn.receive(make_response(req, 200, to_tag="x"), 9.0)
    assert txn.state is State.COMPLETED
    run_until(txn, 9.0 + 5.0)  # timer K = T4
    assert txn.terminated and not txn.timed_out
    assert [r.status for r in txn.responses] == [100, 200]


def test_non_invite_client_reliable_terminates_on_final_response() -> None:
    req = request("BYE")
    txn = NonInviteClientTransaction(req, reliable=True, destination=None, config=CFG)
    txn.start(0.0)
    txn.receive(make_response(req, 200), 0.1)
    assert txn.terminated


def test_client_transactions_refuse_wrong_methods() -> None:
    with pytest.raises(TransactionError):
        InviteClientTransaction(request("BYE"), False, None, CFG).start(0.0)
    with pytest.raises(TransactionError):
        NonInviteClientTransaction(request("INVITE"), False, None, CFG).start(0.0)


def test_invite_server_error_response_retransmitted_with_timer_g_until_ack() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.respond(make_response(req, 100), 0.0)
    txn.receive(req, 0.2)  # retransmitted INVITE → last provisional again
    assert len(txn.take_output()) == 2
    txn.respond(make_response(req, 486, to_tag="b"), 1.0)
    txn.take_output()
    sent = run_until(txn, 12.0)
    assert sent == [1.5, 2.5, 4.5, 8.5, 12.5][:4]
    ack = Request("ACK", req.uri, list(req.headers.items()))
    txn.receive(ack, 12.2)
    assert txn.state is State.CONFIRMED
    assert run_until(txn, 12.2 + 5.0) == []  # timer I absorbs ACKs, sends nothing
    assert txn.terminated and not txn.timed_out


def test_invite_server_error_response_without_ack_times_out_with_timer_h() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.respond(make_response(req, 603, to_tag="b"), 0.0)
    run_until(txn, 40.0)
    assert txn.terminated and txn.timed_out


def test_invite_server_2xx_retransmitted_until_ack_per_13_3_1_4() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.respond(make_response(req, 200, to_tag="b"), 0.0)
    txn.take_output()
    sent = run_until(txn, 8.0)
    assert sent == [0.5, 1.5, 3.5, 7.5]
    txn.ack(8.0)
    assert run_until(txn, 31.0) == []
    run_until(txn, 32.0)
    assert txn.terminated and not txn.timed_out


def test_invite_server_2xx_never_acked_reports_timeout_after_64_t1() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.respond(make_response(req, 200, to_tag="b"), 0.0)
    sent = run_until(txn, 40.0)
    assert sent[-1] <= 32.0
    assert all(b - a <= 4.0 + 1e-9 for a, b in itertools.pairwise(sent))
    assert txn.terminated and txn.timed_out


def test_invite_server_reliable_does_not_retransmit_2xx() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=True, destination=None, config=CFG)
    txn.respond(make_response(req, 200, to_tag="b"), 0.0)
    txn.take_output()
    assert run_until(txn, 40.0) == []


def test_invite_server_refuses_second_final_response() -> None:
    req = request()
    txn = InviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.respond(make_response(req, 486, to_tag="b"), 0.0)
    with pytest.raises(TransactionError):
        txn.respond(make_response(req, 200, to_tag="b"), 0.1)


def test_non_invite_server_answers_retransmissions_and_lingers_for_timer_j() -> None:
    req = request("BYE")
    txn = NonInviteServerTransaction(req, reliable=False, destination=None, config=CFG)
    txn.receive(req, 0.0)  # nothing sent yet: nothing to repeat
    assert txn.take_output() == []
    txn.respond(make_response(req, 200), 0.1)
    txn.receive(req, 1.0)
    assert len(txn.take_output()) == 2
    run_until(txn, 0.1 + 32.0)
    assert txn.terminated


def test_non_invite_server_reliable_terminates_at_once() -> None:
    req = request("BYE")
    txn = NonInviteServerTransaction(req, reliable=True, destination=None, config=CFG)
    txn.respond(make_response(req, 200), 0.0)
    assert txn.terminated


def test_cancel_copies_invite_branch_and_cseq_number() -> None:
    req = request()
    cancel = build_cancel(req)
    again = parse_message(cancel.encode())
    assert isinstance(again, Request)
    assert again.top_via.branch == req.top_via.branch
    assert again.cseq == (7, "CANCEL")
    assert again.uri == req.uri and again.call_id == req.call_id
    assert len(again.via) == 1
    assert server_key(again, "INVITE") == server_key(req)
    assert server_key(again) != server_key(req)


def test_server_key_matches_ack_to_invite_and_falls_back_for_rfc2543_branches() -> None:
    req = request(branch="z9hG4bKabc")
    ack = request("ACK", branch="z9hG4bKabc")
    assert server_key(ack) == server_key(req)
    old = request(branch="oldstyle1")
    assert server_key(old)[0] == "rfc2543"
    assert client_key("z9hG4bKabc", "ACK") == client_key("z9hG4bKabc", "INVITE")
    assert new_branch() != new_branch()
    assert new_branch().startswith("z9hG4bK")


def test_response_for_another_transaction_state_is_ignored_after_termination() -> None:
    req = request("OPTIONS")
    txn = NonInviteClientTransaction(req, reliable=True, destination=None, config=CFG)
    txn.start(0.0)
    txn.receive(make_response(req, 200), 0.1)
    txn.receive(make_response(req, 200), 0.2)
    assert [r.status for r in txn.responses] == [200]
    assert isinstance(txn.responses[0], Response)
