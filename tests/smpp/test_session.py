"""The sans-I/O ESME session driven with bytes and a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp import pdu as P
from smpp.pdu import CommandId as C
from smpp.pdu import Status
from smpp.session import (
    BindFailed,
    BindMode,
    Bound,
    ConnectionDead,
    DeliverReceived,
    EsmeSession,
    Event,
    SessionConfig,
    SessionStateError,
    State,
    SubmitDone,
    SubmitFailed,
    Unbound,
)


def sent(s: EsmeSession) -> list[P.Pdu]:
    return [P.decode(f) for f in P.PduReader().feed(s.data_to_send())]


def events(s: EsmeSession) -> list[Event]:
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def bound(now: float = 0.0, **kw: object) -> EsmeSession:
    cfg = SessionConfig(system_id="esme", password="secret", system_type="SMS", **kw)  # type: ignore[arg-type]
    s = EsmeSession(cfg, now)
    s.connection_made(now)
    (bind,) = sent(s)
    assert isinstance(bind, P.Bind)
    s.receive_data(P.encode(P.BindResp(C.BIND_TRANSCEIVER_RESP, bind.sequence_number, system_id="smsc")), now)
    assert events(s) == [Bound("smsc")]
    return s


def sm(dest: str = "491511") -> P.ShortMessage:
    return P.ShortMessage(C.SUBMIT_SM, destination_addr=dest, short_message=b"hi")


def resp(seq: int, status: int = 0, mid: str = "") -> bytes:
    return P.encode(P.MessageIdResp(C.SUBMIT_SM_RESP, seq, status, message_id=mid))


def test_bind_transceiver_carries_credentials_and_system_type() -> None:
    s = EsmeSession(SessionConfig("esme", "secret", "SMS"), 0.0)
    s.connection_made(0.0)
    (bind,) = sent(s)
    assert isinstance(bind, P.Bind)
    assert (bind.command_id, bind.system_id, bind.password, bind.system_type) == (
        C.BIND_TRANSCEIVER,
        "esme",
        "secret",
        "SMS",
    )
    assert s.state is State.BINDING


def test_bind_rejected_reports_status() -> None:
    s = EsmeSession(SessionConfig("esme", "bad", mode=BindMode.TRANSMITTER), 0.0)
    s.connection_made(0.0)
    (bind,) = sent(s)
    assert bind.command_id == C.BIND_TRANSMITTER
    s.receive_data(
        P.encode(P.BindResp(C.BIND_TRANSMITTER_RESP, bind.sequence_number, Status.ESME_RINVPASWD)), 1
    )
    assert events(s) == [BindFailed(Status.ESME_RINVPASWD)]
    assert s.state is State.CLOSED


def test_bind_without_answer_times_out() -> None:
    s = EsmeSession(SessionConfig("esme", "pw", response_timeout=5), 0.0)
    s.connection_made(0.0)
    assert s.get_timer() == 5.0
    s.handle_timer(5.0)
    assert isinstance(events(s)[0], ConnectionDead)


def test_window_limits_outstanding_submits() -> None:
    s = bound(window=2)
    for i in range(5):
        s.submit(sm(), i, 1.0)
    out = sent(s)
    assert [p.sequence_number for p in out] == [2, 3]
    s.receive_data(resp(2, mid="a"), 1.1)
    assert [p.sequence_number for p in sent(s)] == [4]
    assert events(s) == [SubmitDone(0, "a", False)]
    assert s.outstanding == 4


def test_tps_token_bucket_spaces_submits_by_returned_timer() -> None:
    s = bound(window=100, tps=10.0, tps_burst=1.0)
    for i in range(3):
        s.submit(sm(), i, 0.0)
    assert len(sent(s)) == 1
    assert s.get_timer() == pytest.approx(0.1)
    s.handle_timer(0.1)
    assert len(sent(s)) == 1
    s.handle_timer(0.15)
    assert sent(s) == []
    s.handle_timer(0.2)
    assert len(sent(s)) == 1


def test_throttled_submit_is_retried_first_after_backoff() -> None:
    s = bound(window=10, throttle_backoff=1.0, throttle_backoff_max=4.0)
    s.submit(sm("1"), "a", 0.0)
    s.submit(sm("2"), "b", 0.0)
    first, _second = sent(s)
    s.receive_data(resp(first.sequence_number, Status.ESME_RTHROTTLED), 0.5)
    s.submit(sm("3"), "c", 0.6)
    assert sent(s) == []  # paused
    assert s.get_timer() == 1.5
    s.handle_timer(1.5)
    again = sent(s)
    assert [p.destination_addr for p in again] == ["1", "3"]  # type: ignore[attr-defined]
    s.receive_data(resp(again[0].sequence_number, Status.ESME_RMSGQFUL), 1.6)
    s.handle_timer(2.0)
    assert sent(s) == []  # back-off doubled to 2 s
    s.handle_timer(3.6)
    (third,) = sent(s)
    s.receive_data(resp(third.sequence_number, mid="x"), 3.7)
    assert SubmitDone("a", "x", False) in events(s)
    assert s.stats.throttled == 2


def test_permanent_and_temporary_errors_are_reported() -> None:
    s = bound()
    s.submit(sm(), "a", 0)
    s.submit(sm(), "b", 0)
    a, b = sent(s)
    s.receive_data(
        resp(a.sequence_number, Status.ESME_RINVDSTADR) + resp(b.sequence_number, Status.ESME_RSYSERR), 1
    )
    assert events(s) == [
        SubmitFailed("a", Status.ESME_RINVDSTADR, temporary=False),
        SubmitFailed("b", Status.ESME_RSYSERR, temporary=True),
    ]


def test_generic_nack_for_a_submit_fails_it() -> None:
    s = bound()
    s.submit(sm(), "a", 0)
    (a,) = sent(s)
    s.receive_data(P.encode(P.Pdu(C.GENERIC_NACK, a.sequence_number, Status.ESME_RINVCMDLEN)), 1)
    assert events(s) == [SubmitFailed("a", Status.ESME_RINVCMDLEN, temporary=False)]


def test_unanswered_submit_is_resubmitted_and_flagged_possible_duplicate() -> None:
    s = bound(submit_timeout=10.0, enquire_link_interval=100)
    s.submit(sm(), "a", 0.0)
    (a,) = sent(s)
    assert s.get_timer() == 10.0
    s.handle_timer(10.0)
    (a2,) = sent(s)
    assert a2.sequence_number != a.sequence_number
    s.receive_data(resp(a.sequence_number, mid="late"), 10.5)  # late answer to the first try: ignored
    s.receive_data(resp(a2.sequence_number, mid="m"), 11)
    assert events(s) == [SubmitDone("a", "m", True)]
    assert s.stats.late_responses == 1 and s.stats.resubmitted_after_timeout == 1


def test_enquire_link_sent_when_idle_and_dead_when_unanswered() -> None:
    s = bound(enquire_link_interval=30, response_timeout=5)
    assert s.get_timer() == 30
    s.handle_timer(30)
    (el,) = sent(s)
    assert el.command_id == C.ENQUIRE_LINK
    s.receive_data(P.encode(P.Pdu(C.ENQUIRE_LINK_RESP, el.sequence_number)), 31)
    assert s.get_timer() == 61
    s.handle_timer(61)
    sent(s)
    s.handle_timer(66)
    assert isinstance(events(s)[-1], ConnectionDead)


def test_answers_enquire_link_from_smsc() -> None:
    s = bound()
    s.receive_data(P.encode(P.Pdu(C.ENQUIRE_LINK, 77)), 1)
    assert sent(s) == [P.Pdu(C.ENQUIRE_LINK_RESP, 77)]


def test_deliver_sm_is_answered_only_when_the_application_responds() -> None:
    s = bound()
    d = P.ShortMessage(C.DELIVER_SM, 500, source_addr="4915", destination_addr="4930", short_message=b"yo")
    s.receive_data(P.encode(d), 1)
    (ev,) = events(s)
    assert isinstance(ev, DeliverReceived) and ev.ticket == 500
    assert sent(s) == []  # nothing until the app has stored it
    assert s.respond(500)
    assert sent(s) == [P.MessageIdResp(C.DELIVER_SM_RESP, 500)]
    assert not s.respond(500)


def test_deliver_on_transmitter_bind_is_refused() -> None:
    s = EsmeSession(SessionConfig("e", "p", mode=BindMode.TRANSMITTER), 0)
    s.connection_made(0)
    (b,) = sent(s)
    s.receive_data(P.encode(P.BindResp(C.BIND_TRANSMITTER_RESP, b.sequence_number)), 0)
    s.receive_data(P.encode(P.ShortMessage(C.DELIVER_SM, 9)), 1)
    (r,) = sent(s)
    assert r.command_id == C.DELIVER_SM_RESP and r.command_status == Status.ESME_RINVBNDSTS


def test_receiver_bind_cannot_submit() -> None:
    s = EsmeSession(SessionConfig("e", "p", mode=BindMode.RECEIVER), 0)
    with pytest.raises(SessionStateError):
        s.submit(sm(), 1, 0)


def test_malformed_pdus_are_nacked_not_raised() -> None:
    s = bound()
    s.receive_data(struct.pack(">IIII", 16, 0x0000_0077, 0, 12), 1)  # unknown command
    body = b"\0\0\0" + b"9" * 30
    s.receive_data(struct.pack(">IIII", 16 + len(body), C.DELIVER_SM, 0, 13) + body, 1)
    out = sent(s)
    assert out[0] == P.Pdu(C.GENERIC_NACK, 12, Status.ESME_RINVCMDID)
    assert out[1].command_id == C.DELIVER_SM_RESP and out[1].command_status == Status.ESME_RINVSRCADR
    assert s.state is State.BOUND and s.stats.malformed_received == 2


def test_unframeable_stream_kills_the_connection() -> None:
    s = bound()
    s.receive_data(b"\x00\x00\x00\x02junk", 1)
    assert isinstance(events(s)[0], ConnectionDead)
    assert s.state is State.CLOSED


def test_graceful_unbind_waits_for_window_then_unbinds() -> None:
    s = bound()
    s.submit(sm(), "a", 0)
    (a,) = sent(s)
    s.unbind(1)
    assert sent(s) == []
    assert not s.can_submit
    s.receive_data(resp(a.sequence_number, mid="m"), 2)
    (u,) = sent(s)
    assert u.command_id == C.UNBIND
    s.receive_data(P.encode(P.Pdu(C.UNBIND_RESP, u.sequence_number)), 3)
    assert events(s) == [SubmitDone("a", "m", False), Unbound(by_peer=False)]
    assert s.state is State.CLOSED


def test_peer_unbind_is_answered_and_unfinished_are_handed_back() -> None:
    s = bound(window=1)
    s.submit(sm("1"), "a", 0)
    s.submit(sm("2"), "b", 0)
    sent(s)
    s.receive_data(P.encode(P.Pdu(C.UNBIND, 99)), 1)
    assert sent(s) == [P.Pdu(C.UNBIND_RESP, 99)]
    assert events(s) == [Unbound(by_peer=True)]
    left = s.take_unfinished()
    assert [(u.token, u.written) for u in left] == [("a", True), ("b", False)]
    assert s.outstanding == 0


def test_generic_nack_to_bind_is_a_bind_failure() -> None:
    s = EsmeSession(SessionConfig("e", "p"), 0)
    s.connection_made(0)
    (b,) = sent(s)
    s.receive_data(P.encode(P.Pdu(C.GENERIC_NACK, b.sequence_number, Status.ESME_RINVCMDLEN)), 1)
    assert events(s) == [BindFailed(Status.ESME_RINVCMDLEN)]


def test_data_sm_is_handed_out_and_answered_with_data_sm_resp() -> None:
    s = bound()
    d = P.DataSm(
        C.DATA_SM, 31, source_addr="4915", destination_addr="4930", tlvs={P.Tag.MESSAGE_PAYLOAD: b"x"}
    )
    s.receive_data(P.encode(d), 1)
    (ev,) = events(s)
    assert isinstance(ev, DeliverReceived) and ev.pdu == d
    s.respond(31)
    assert sent(s) == [P.MessageIdResp(C.DATA_SM_RESP, 31)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_random_bytes_from_the_wire_never_raise(chunks: list[bytes]) -> None:
    s = bound()
    for i, c in enumerate(chunks):
        s.receive_data(c, float(i))
        s.handle_timer(float(i))
    s.data_to_send()
    events(s)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([int(c) for c in C]).flatmap(
            lambda cid: st.tuples(st.just(cid), st.integers(0, 0x7FFFFFFF), st.binary(max_size=60))
        ),
        max_size=10,
    )
)
def test_well_framed_garbage_pdus_never_raise(pdus: list[tuple[int, int, bytes]]) -> None:
    s = bound()
    s.submit(sm(), "a", 0)
    for cid, seq, body in pdus:
        s.receive_data(struct.pack(">IIII", 16 + len(body), cid, 0, seq) + body, 1.0)
    s.data_to_send()
    events(s)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"system_id": "x" * 16},
        {"password": "123456789"},
        {"system_type": "y" * 13},
        {"window": 0},
        {"tps": 0.0},
    ],
)
def test_config_that_cannot_be_encoded_is_refused_up_front(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"system_id": "esme", "password": "pw"}
    base.update(kwargs)
    with pytest.raises(ValueError):
        SessionConfig(**base)  # type: ignore[arg-type]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.just(0), st.just(0)),
        st.tuples(
            st.just("answer"),
            st.integers(0, 100),
            st.sampled_from([0, Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL, Status.ESME_RSYSERR, 0x0B]),
        ),
        st.tuples(st.just("tick"), st.integers(1, 40), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(1, 4))
def test_every_submission_ends_exactly_once_and_window_holds(
    ops: list[tuple[str, int, int]], window: int
) -> None:
    s = bound(window=window, submit_timeout=10.0, throttle_backoff=1.0, enquire_link_interval=1000)
    now = 0.0
    outstanding: list[int] = []  # submit_sm sequence numbers the "SMSC" has not answered
    outcomes: dict[int, list[str]] = {}
    token = 0
    for op, a, b in ops:
        if op == "submit":
            s.submit(sm(), token, now)
            outcomes[token] = []
            token += 1
        elif op == "answer" and outstanding:
            seq = outstanding.pop(a % len(outstanding))
            s.receive_data(resp(seq, b, mid="m" if b == 0 else ""), now)
        elif op == "tick":
            now += a / 10
            s.handle_timer(now)
        outstanding += [p.sequence_number for p in sent(s) if p.command_id == C.SUBMIT_SM]
        assert len(s._inflight) <= window
        for e in events(s):
            if isinstance(e, SubmitDone | SubmitFailed):
                outcomes[e.token].append(type(e).__name__)  # type: ignore[index]
    for u in s.take_unfinished():
        outcomes[u.token].append("unfinished")  # type: ignore[index]
    assert all(len(v) == 1 for v in outcomes.values()), outcomes
