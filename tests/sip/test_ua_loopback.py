"""The asyncio facade over real loopback sockets: two UserAgents calling each other on UDP and TCP."""

from __future__ import annotations

import asyncio

import pytest

from sip.transport import Resolver, SrvRecord
from sip.ua import Call, UserAgent
from sip.useragent import (
    CallConfirmed,
    CallEnded,
    CallProgress,
    DtmfReceived,
    OfferAnswered,
    OfferReceived,
    Target,
    UserAgentConfig,
)

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = OFFER.replace("4000", "5000")


async def pair(tcp: bool = False) -> tuple[UserAgent, UserAgent]:
    a = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TCP" if tcp else "UDP"))
    b = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TCP" if tcp else "UDP"))
    await a.start(tcp=tcp)
    await b.start(tcp=tcp)
    return a, b


async def expect(call: Call, kind: type) -> object:
    async with asyncio.timeout(5):
        while True:
            ev = await call.next_event()
            if isinstance(ev, kind):
                return ev


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_call_answer_hold_dtmf_and_hangup_over_loopback(tcp: bool) -> None:
    a, b = await pair(tcp)
    try:
        host, port = b.address
        suffix = ";transport=tcp" if tcp else ""
        out = await a.call(f"<sip:bob@{host}:{port}{suffix}>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        assert inc.remote_sdp == OFFER.encode()
        inc.ring()
        ev = await expect(out, CallProgress)
        assert isinstance(ev, CallProgress) and ev.status == 180
        inc.answer(ANSWER)
        async with asyncio.timeout(5):
            assert await out.answered == ANSWER.encode()
        await expect(inc, CallConfirmed)
        out.reinvite(OFFER + "a=sendonly\r\n")
        offer = await expect(inc, OfferReceived)
        assert isinstance(offer, OfferReceived) and b"sendonly" in offer.body
        inc.accept_offer(ANSWER + "a=recvonly\r\n")
        answered = await expect(out, OfferAnswered)
        assert isinstance(answered, OfferAnswered) and answered.status == 200
        out.send_dtmf("5")
        dtmf = await expect(inc, DtmfReceived)
        assert isinstance(dtmf, DtmfReceived) and dtmf.digit == "5"
        inc.hangup()
        ended = await expect(out, CallEnded)
        assert isinstance(ended, CallEnded) and ended.remote
        assert isinstance(await expect(inc, CallEnded), CallEnded)
    finally:
        await a.close()
        await b.close()


async def test_call_to_a_name_resolved_through_a_static_srv_record() -> None:
    a = UserAgent(UserAgentConfig("127.0.0.1", 0), resolver=None)
    b = UserAgent(UserAgentConfig("127.0.0.1", 0))
    await b.start()
    _, port = b.address
    a.resolver = Resolver({"_sip._udp.trunk.test": [SrvRecord(10, 1, port, "localhost")]})
    await a.start()
    try:
        out = await a.call("<sip:bob@trunk.test>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        inc.reject(486)
        ended = await expect(out, CallEnded)
        assert isinstance(ended, CallEnded) and ended.status == 486
    finally:
        await a.close()
        await b.close()


async def test_resolver_uses_ip_literals_and_srv_then_address_records() -> None:
    r = Resolver(
        {"_sip._tcp.pbx.test": [SrvRecord(20, 0, 5090, "localhost"), SrvRecord(10, 0, 5080, "localhost")]}
    )
    assert await r.resolve(Target("UDP", "127.0.0.1", None)) == [("127.0.0.1", 5060)]
    assert await r.resolve(Target("TLS", "::1", None)) == [("::1", 5061)]
    got = await r.resolve(Target("TCP", "pbx.test", None))
    assert [p for _, p in got][:1] == [5080]
    assert ("127.0.0.1", 5080) in got
    assert ("127.0.0.1", 5070) in await r.resolve(Target("UDP", "localhost", 5070))
