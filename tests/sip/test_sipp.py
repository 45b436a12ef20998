"""Interoperability with sipp on 127.0.0.1: built-in uac/uas scenarios and custom XML in scenarios/."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sip.auth import Credentials, DigestServer
from sip.ua import Call, UserAgent
from sip.useragent import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallProgress,
    DtmfReceived,
    OfferAnswered,
    OfferReceived,
    RegistrationStatus,
    SessionState,
    Target,
    UserAgentConfig,
)
from tests.sip.sippctl import SCENARIOS, free_udp_port, needs_sipp, sipp

pytestmark = needs_sipp

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


async def started(**kw: object) -> UserAgent:
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0, **kw))  # type: ignore[arg-type]
    await ua.start()
    return ua


async def until(call: Call, kind: type, limit: float = 10.0) -> object:
    async with asyncio.timeout(limit):
        while True:
            ev = await call.next_event()
            if isinstance(ev, kind):
                return ev
            if isinstance(ev, CallEnded):
                return ev


async def test_our_uac_against_sipp_builtin_uas(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(tmp_path, "-sn", "uas", "-m", "1", port=port, limit=30) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            ev = await until(call, CallAnswered)
            assert isinstance(ev, CallAnswered), ev
            assert b"m=audio" in ev.body
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


def auto_answer(sdp: str = OFFER, ring: bool = True) -> object:
    def on_incoming(call: Call) -> None:
        if ring:
            call.ring()
        call.answer(sdp)

    return on_incoming


async def test_sipp_builtin_uac_against_our_uas(tmp_path: Path) -> None:
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0), on_incoming=auto_answer())  # type: ignore[arg-type]
    await ua.start()
    host, port = ua.address
    try:
        async with sipp(
            tmp_path, "-sn", "uac", f"{host}:{port}", "-m", "3", "-d", "200", "-l", "3", limit=30
        ) as peer:
            run = await peer.wait()
        assert run.returncode == 0, str(run)
        assert ua.core.stats["parse_errors"] == 0
    finally:
        await ua.close()


@pytest.mark.parametrize("code", ["401", "407"])
async def test_invite_challenged_by_sipp_is_retried_with_credentials(tmp_path: Path, code: str) -> None:
    port = free_udp_port()
    ua = await started(credentials=[Credentials("alice", "secret")])
    args = ["-sf", str(SCENARIOS / f"uas_auth_{code}.xml"), "-m", "1"]
    try:
        async with sipp(tmp_path, *args, port=port, limit=30) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            ev = await until(call, CallAnswered)
            assert isinstance(ev, CallAnswered), ev
            assert call.session.dialog is not None and call.session.dialog.remote_tag.find("SIPpTag02") > 0
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_cancel_while_sipp_is_ringing(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(
            tmp_path, "-sf", str(SCENARIOS / "uas_cancel.xml"), "-m", "1", port=port, limit=30
        ) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            ev = await until(call, CallProgress)
            assert isinstance(ev, CallProgress) and ev.status == 180
            call.hangup()
            ended = await until(call, CallEnded)
            assert isinstance(ended, CallEnded) and ended.status == 487
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_486_busy_from_sipp_ends_the_call(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(
            tmp_path, "-sf", str(SCENARIOS / "uas_busy.xml"), "-m", "1", port=port, limit=30
        ) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            ended = await until(call, CallEnded)
            assert isinstance(ended, CallEnded) and ended.status == 486 and ended.remote
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_reinvite_hold_and_unhold_both_ways_then_bye_from_sipp(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(
            tmp_path, "-sf", str(SCENARIOS / "uas_reinvite.xml"), "-m", "1", port=port, limit=30
        ) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            assert isinstance(await until(call, CallAnswered), CallAnswered)
            call.reinvite(OFFER + "a=sendonly\r\n")
            answer = await until(call, OfferAnswered)
            assert isinstance(answer, OfferAnswered) and answer.status == 200 and b"a=recvonly" in answer.body
            for expected, reply in (("a=sendonly", "a=recvonly"), ("a=sendrecv", "a=sendrecv")):
                offer = await until(call, OfferReceived)
                assert isinstance(offer, OfferReceived) and expected.encode() in offer.body
                call.accept_offer(OFFER + reply + "\r\n")
            ended = await until(call, CallEnded)
            assert isinstance(ended, CallEnded) and ended.remote and ended.reason == "BYE"
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_sipp_caller_with_pai_sends_dtmf_info_and_receives_our_bye(tmp_path: Path) -> None:
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0))
    await ua.start()
    host, port = ua.address
    try:
        args = [
            "-sf",
            str(SCENARIOS / "uac_bye_from_callee.xml"),
            f"{host}:{port}",
            "-s",
            "+15551234",
            "-m",
            "1",
        ]
        async with sipp(tmp_path, *args, limit=30) as peer:
            async with asyncio.timeout(10):
                call = await ua.incoming.get()
            assert call.incoming and call.request_uri.startswith("sip:+15551234@")
            assert [p.display for p in call.p_asserted_identity] == ["Carol Caller"]
            assert b"m=audio" in call.remote_sdp
            call.answer(OFFER)
            assert isinstance(await until(call, CallConfirmed), CallConfirmed)
            dtmf = await until(call, DtmfReceived)
            assert isinstance(dtmf, DtmfReceived) and (dtmf.digit, dtmf.duration_ms) == ("7", 250)
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_sipp_caller_authenticates_to_our_uas(tmp_path: Path) -> None:
    server = DigestServer("telebridge.test", {"trunk": "s3cret"}.get)
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0, digest_server=server), on_incoming=auto_answer())  # type: ignore[arg-type]
    await ua.start()
    host, port = ua.address
    try:
        args = ["-sf", str(SCENARIOS / "uac_auth.xml"), f"{host}:{port}", "-m", "1"]
        async with sipp(tmp_path, *args, limit=30) as peer:
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


def drop_first(ua: UserAgent, outgoing: tuple[bytes, ...], incoming: tuple[bytes, ...]) -> list[bytes]:
    """Lose the first datagram starting with each prefix, in each direction; returns what was lost."""
    lost: list[bytes] = []
    endpoint = ua.endpoint
    send, receive = endpoint._send, endpoint._input

    def lossy_send(data: bytes, target: Target) -> None:
        for prefix in outgoing:
            if data.startswith(prefix) and b"OUT " + prefix not in lost:
                lost.append(b"OUT " + prefix)
                return
        send(data, target)

    def lossy_input(data: bytes, source: Target) -> None:
        for prefix in incoming:
            if data.startswith(prefix) and b"IN " + prefix not in lost:
                lost.append(b"IN " + prefix)
                return
        receive(data, source)

    endpoint._send = lossy_send  # type: ignore[method-assign]
    endpoint._input = lossy_input  # type: ignore[method-assign]
    return lost


async def test_lost_invite_and_lost_200_recovered_against_sipp_uas(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    lost = drop_first(ua, (b"INVITE ",), (b"SIP/2.0 200",))
    try:
        async with sipp(tmp_path, "-sn", "uas", "-m", "1", port=port, limit=30) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            assert isinstance(await until(call, CallAnswered), CallAnswered)
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
        assert lost == [b"OUT INVITE ", b"IN SIP/2.0 200"]
    finally:
        await ua.close()


async def test_lost_200_and_lost_bye_recovered_against_sipp_uac(tmp_path: Path) -> None:
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0), on_incoming=auto_answer())  # type: ignore[arg-type]
    await ua.start()
    lost = drop_first(ua, (b"SIP/2.0 200",), (b"BYE ",))
    host, port = ua.address
    try:
        async with sipp(tmp_path, "-sn", "uac", f"{host}:{port}", "-m", "1", "-d", "100", limit=30) as peer:
            run = await peer.wait()
        assert run.returncode == 0, str(run)
        assert lost == [b"OUT SIP/2.0 200", b"IN BYE "]
    finally:
        await ua.close()


@pytest.mark.slow
async def test_call_held_longer_than_64_t1_stays_up(tmp_path: Path) -> None:
    """Past 32 s every transaction of the setup has ended; the dialog must live on and BYE cleanly."""
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(tmp_path, "-sn", "uas", "-m", "1", port=port, limit=60) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            assert isinstance(await until(call, CallAnswered), CallAnswered)
            await asyncio.sleep(34)
            assert call.state is SessionState.CONFIRMED
            assert call.events.empty()
            assert not ua.core._client and not ua.core._server  # all setup transactions reaped
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_sipp_uac_over_tcp_against_our_uas(tmp_path: Path) -> None:
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TCP"), on_incoming=auto_answer())  # type: ignore[arg-type]
    await ua.start(tcp=True)
    host, port = ua.address
    try:
        args = ["-sn", "uac", f"{host}:{port}", "-t", "t1", "-m", "3", "-d", "100", "-l", "3"]
        async with sipp(tmp_path, *args, limit=30) as peer:
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_our_uac_over_tcp_against_sipp_uas(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TCP"))
    await ua.start(tcp=True)
    try:
        async with sipp(tmp_path, "-sn", "uas", "-t", "t1", "-m", "1", port=port, limit=30, tcp=True) as peer:
            call = await ua.call(
                f"<sip:service@127.0.0.1:{port};transport=tcp>", "<sip:alice@127.0.0.1>", OFFER
            )
            assert isinstance(await until(call, CallAnswered), CallAnswered)
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_early_media_183_with_sdp_from_sipp(tmp_path: Path) -> None:
    port = free_udp_port()
    ua = await started()
    try:
        async with sipp(
            tmp_path, "-sf", str(SCENARIOS / "uas_early_media.xml"), "-m", "1", port=port, limit=30
        ) as peer:
            call = await ua.call(f"<sip:service@127.0.0.1:{port}>", "<sip:alice@127.0.0.1>", OFFER)
            progress = await until(call, CallProgress)
            assert isinstance(progress, CallProgress) and progress.status == 183
            assert progress.content_type == "application/sdp" and b"a=sendonly" in progress.body
            answered = await until(call, CallAnswered)
            assert isinstance(answered, CallAnswered) and b"PCMA" in answered.body
            call.hangup()
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()


async def test_register_with_digest_against_sipp_registrar(tmp_path: Path) -> None:
    port = free_udp_port()
    events: asyncio.Queue[object] = asyncio.Queue()
    ua = UserAgent(
        UserAgentConfig("127.0.0.1", 0, credentials=[Credentials("alice", "secret")]),
        on_event=events.put_nowait,
    )
    await ua.start()
    try:
        async with sipp(
            tmp_path, "-sf", str(SCENARIOS / "uas_registrar.xml"), "-m", "1", port=port, limit=30
        ) as peer:
            ua.register(f"sip:127.0.0.1:{port}", "<sip:alice@sipp.test>", expires=300)
            async with asyncio.timeout(10):
                status = await events.get()
            assert isinstance(status, RegistrationStatus)
            assert (status.registered, status.status, status.expires) == (True, 200, 60)
            run = await peer.wait()
        assert run.returncode == 0, str(run)
    finally:
        await ua.close()
