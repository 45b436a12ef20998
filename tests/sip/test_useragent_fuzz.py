"""Property test: whatever arrives, in whatever order, the user agent core raises nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.useragent import Target, UserAgentConfig, UserAgentCore

SRC = Target("UDP", "127.0.0.1", 5070)


def _messages() -> list[bytes]:
    head = (
        "{m} sip:bob@127.0.0.1:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{b};rport\r\n"
        "From: <sip:a@127.0.0.1>;tag=ft\r\nTo: <sip:bob@127.0.0.1>{tt}\r\nCall-ID: cid\r\nCSeq: {n} {cm}\r\n"
        "Contact: <sip:a@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{x}Content-Length: {cl}\r\n\r\n{body}"
    )
    sdp = "v=0\r\n"
    out: list[bytes] = []
    for m, b, tt, n, extra, body in [
        ("INVITE", "1", "", 1, "Content-Type: application/sdp\r\n", sdp),
        ("INVITE", "2", "", 1, "", ""),
        ("ACK", "1", ";tag=x", 1, "", ""),
        ("CANCEL", "1", "", 1, "", ""),
        ("BYE", "3", ";tag=x", 2, "", ""),
        (
            "INVITE",
            "4",
            ";tag=x",
            3,
            "Session-Expires: 90;refresher=uas\r\nContent-Type: application/sdp\r\n",
            sdp,
        ),
        ("UPDATE", "5", ";tag=x", 4, "Session-Expires: 10\r\n", ""),
        ("INFO", "6", ";tag=x", 5, "Content-Type: application/dtmf-relay\r\n", "Signal=*\r\nDuration=x\r\n"),
        ("OPTIONS", "7", "", 1, "", ""),
        ("INVITE", "8", "", 1, "Session-Expires: 1\r\nRequire: timer\r\n", ""),
    ]:
        out.append(head.format(m=m, b=b, tt=tt, n=n, cm=m, x=extra, cl=len(body), body=body).encode())
    for status in (
        "100 Trying",
        "180 Ringing",
        "200 OK",
        "401 Unauthorized",
        "407 Proxy",
        "491 Pending",
        "486 Busy",
    ):
        out.append(
            (
                f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK1\r\n"
                "From: <sip:a@127.0.0.1>;tag=ft\r\nTo: <sip:bob@127.0.0.1>;tag=x\r\nCall-ID: cid\r\nCSeq: 1 INVITE\r\n"
                'WWW-Authenticate: Digest realm="r", nonce="n"\r\nContent-Length: 0\r\n\r\n'
            ).encode()
        )
    return out


MESSAGES = _messages()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(MESSAGES),
            st.floats(0, 40),
            st.sampled_from(
                ["none", "answer", "reject", "hangup", "ring", "reinvite", "dtmf", "accept", "timer"]
            ),
        ),
        max_size=12,
    )
)
def test_core_survives_any_sequence_of_messages_and_commands(steps: list[tuple[bytes, float, str]]) -> None:
    core = UserAgentCore(UserAgentConfig("127.0.0.1", 5071))
    sessions = []
    now = 0.0
    for data, dt, command in steps:
        now += dt
        core.receive(data, SRC, now)
        while (ev := core.next_event()) is not None:
            session = getattr(ev, "session", None)
            if session is not None:
                sessions.append(session)
        for session in sessions[-2:]:
            try:
                if command == "answer":
                    core.answer(session, b"v=0\r\n", now)
                elif command == "reject":
                    core.reject(session, 486, now)
                elif command == "hangup":
                    core.hangup(session, now)
                elif command == "ring":
                    core.ring(session, now)
                elif command == "reinvite":
                    core.reinvite(session, b"v=0\r\n", now)
                elif command == "dtmf":
                    core.send_dtmf(session, "5", now)
                elif command == "accept":
                    core.accept_offer(session, b"v=0\r\n", now)
            except Exception as exc:  # only the documented refusal is allowed
                assert type(exc).__name__ == "DialogError", repr(exc)
        if command == "timer":
            at = core.get_timer()
            if at is not None:
                now = max(now, at)
                core.handle_timer(now)
        core.take_output()
    core.handle_timer(now + 1000)
    core.take_output()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([100, 180, 183, 200, 401, 407, 422, 486, 491, 500]),
            st.sampled_from(["t1", "t2", None]),
            st.floats(0, 40),
            st.sampled_from(["none", "hangup", "reinvite", "dtmf", "timer", "invite-again"]),
        ),
        max_size=12,
    )
)
def test_uac_core_survives_any_sequence_of_responses(steps: list[tuple[int, str | None, float, str]]) -> None:
    from sip.auth import Credentials
    from sip.message import Request, make_response, parse_message

    core = UserAgentCore(UserAgentConfig("127.0.0.1", 5070, credentials=[Credentials("u", "p")]))
    session = core.invite("<sip:bob@127.0.0.1:5071>", "<sip:a@127.0.0.1>", b"v=0\r\n", 0.0)
    now = 0.0
    for status, tag, dt, command in steps:
        now += dt
        requests = [m for m in (parse_message(d) for d, _ in core.take_output()) if isinstance(m, Request)]
        target = next(
            (r for r in reversed(requests) if r.method in ("INVITE", "BYE", "INFO", "UPDATE")), None
        )
        if target is None:
            target = session.invite
        extra = []
        if status in (401, 407):
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            extra.append((name, f'Digest realm="r", nonce="n{int(now)}", qop="auth"'))
        if status == 422:
            extra.append(("Min-SE", "3600"))
        if status == 200:
            extra += [("Contact", "<sip:bob@127.0.0.1:5071>"), ("Session-Expires", "120;refresher=uac")]
        resp = make_response(target, status, to_tag=tag, extra=extra)
        core.receive(resp.encode(), Target("UDP", "127.0.0.1", 5071), now)
        while core.next_event() is not None:
            pass
        try:
            if command == "hangup":
                core.hangup(session, now)
            elif command == "reinvite":
                core.reinvite(session, b"v=0\r\n", now)
            elif command == "dtmf":
                core.send_dtmf(session, "1", now)
            elif command == "invite-again":
                session = core.invite("<sip:bob@127.0.0.1:5071>", "<sip:a@127.0.0.1>", b"v=0\r\n", now)
        except Exception as exc:
            assert type(exc).__name__ == "DialogError", repr(exc)
        if command == "timer":
            at = core.get_timer()
            if at is not None:
                now = max(now, at)
                core.handle_timer(now)
    core.handle_timer(now + 10000)
    core.take_output()
