"""The asyncio facade over real loopback sockets: two UserAgents calling each other on UDP and TCP."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import pytest

from sip.errors import CallFailed
from sip.transaction import TimerConfig
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
    TrunkStatus,
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
    a.resolver = Resolver({"_sip._udp.trunk.test": [SrvRecord(10, 1, port, "127.0.0.1")]})
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


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (IP SAN); returns (server context, client context trusting it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "telebridge test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_call_over_tls_with_bye_from_the_callee(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    a = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TLS"))
    b = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TLS"))
    await a.start(tls=server_ctx, tls_client=client_ctx)
    await b.start(tls=server_ctx, tls_client=client_ctx)
    try:
        host, port = b.address
        out = await a.call(f"<sip:bob@{host}:{port};transport=tls>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        assert inc.session.invite.top_via.transport == "TLS"
        inc.answer(ANSWER)
        async with asyncio.timeout(5):
            assert await out.answered == ANSWER.encode()
        inc.hangup()
        ended = await expect(out, CallEnded)
        assert isinstance(ended, CallEnded) and ended.remote
    finally:
        await a.close()
        await b.close()


async def test_garbage_on_a_tcp_stream_closes_only_that_connection() -> None:
    a, b = await pair(tcp=True)
    try:
        host, port = b.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n\r\n")  # no Content-Length
        await writer.drain()
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the edge
        writer.close()
        out = await a.call(f"<sip:bob@{host}:{port};transport=tcp>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        inc.reject(486)
        ended = await expect(out, CallEnded)
        assert isinstance(ended, CallEnded) and ended.status == 486
    finally:
        await a.close()
        await b.close()


async def test_malformed_udp_request_gets_400_from_the_socket() -> None:
    a, b = await pair()
    try:
        host, port = b.address
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
        transport.sendto(
            b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx;rport\r\n"
            b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 9999\r\n\r\n",
            (host, port),
        )
        async with asyncio.timeout(5):
            data = await got
        assert data.startswith(b"SIP/2.0 400 Max-Forwards out of range")
        transport.close()
    finally:
        await a.close()
        await b.close()


async def test_trunk_monitor_through_the_facade_reports_up_then_down() -> None:
    events: asyncio.Queue[object] = asyncio.Queue()
    fast = TimerConfig(t1=0.01, t2=0.04, t4=0.05)  # Timer F = 0.64 s, so "down" is quick to see
    a = UserAgent(UserAgentConfig("127.0.0.1", 0, timers=fast), on_event=events.put_nowait)
    b = UserAgent(UserAgentConfig("127.0.0.1", 0))
    await a.start()
    await b.start()
    try:
        host, port = b.address
        mon = a.monitor(f"sip:{host}:{port}", interval=0.2)
        async with asyncio.timeout(5):
            up = await events.get()
        assert isinstance(up, TrunkStatus) and up.up
        await b.close()
        async with asyncio.timeout(10):
            down = await events.get()
        assert isinstance(down, TrunkStatus) and not down.up
        mon.stop()
    finally:
        await a.close()


async def test_awaiting_answer_of_a_rejected_call_raises_call_failed() -> None:
    a, b = await pair()
    try:
        host, port = b.address
        out = await a.call(f"<sip:bob@{host}:{port}>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        inc.reject(603)
        with pytest.raises(CallFailed) as info:
            async with asyncio.timeout(5):
                await out.answered
        assert info.value.status == 603
        async with asyncio.timeout(5):
            ended = await out.ended
        assert ended.status == 603 and ended.remote
        assert [type(e) async for e in out] == [CallEnded]
    finally:
        await a.close()
        await b.close()


async def test_srv_failover_after_a_timeout_moves_to_the_next_server() -> None:
    """RFC 3263 §4.3: the first SRV target is dead; after its OPTIONS times out, the next one is used."""
    fast = TimerConfig(t1=0.01, t2=0.04, t4=0.05)
    events: asyncio.Queue[object] = asyncio.Queue()
    backup = UserAgent(UserAgentConfig("127.0.0.1", 0))
    await backup.start()
    _, live = backup.address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again below: nothing listens there
    records = [SrvRecord(10, 0, dead, "127.0.0.1"), SrvRecord(20, 0, live, "127.0.0.1")]
    a = UserAgent(UserAgentConfig("127.0.0.1", 0, timers=fast), on_event=events.put_nowait,
                  resolver=Resolver({"_sip._udp.trunk.test": records}))  # fmt: skip
    await a.start()
    try:
        mon = a.monitor("sip:trunk.test", interval=0.1)
        seen: list[bool] = []
        async with asyncio.timeout(10):
            while True:
                ev = await events.get()
                if isinstance(ev, TrunkStatus):
                    seen.append(ev.up)
                    if ev.up:
                        break
        assert seen == [False, True]
        mon.stop()
    finally:
        await a.close()
        await backup.close()


async def test_tcp_connection_refused_fails_the_call_at_once() -> None:
    a = UserAgent(UserAgentConfig("127.0.0.1", 0, transport="TCP"))
    await a.start(tcp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens once closed
    try:
        out = await a.call(f"<sip:bob@127.0.0.1:{dead};transport=tcp>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):  # well before Timer B's 32 s
            ended = await out.ended
        assert ended.status == 503 and not ended.remote
    finally:
        await a.close()


async def test_closing_the_user_agent_hangs_up_its_calls() -> None:
    a, b = await pair()
    try:
        host, port = b.address
        out = await a.call(f"<sip:bob@{host}:{port}>", "<sip:alice@127.0.0.1>", OFFER)
        async with asyncio.timeout(5):
            inc = await b.incoming.get()
        inc.answer(ANSWER)
        async with asyncio.timeout(5):
            await out.answered
        assert a.active_calls() == [out]
        await a.close()
        async with asyncio.timeout(5):
            ended = await inc.ended
        assert ended.remote and ended.reason == "BYE"
    finally:
        await a.close()  # a second close is harmless
        await b.close()


async def test_tcp_reconnects_after_the_peer_closed_the_connection() -> None:
    a, b = await pair(tcp=True)
    try:
        host, port = b.address
        for round_ in range(2):
            out = await a.call(f"<sip:bob@{host}:{port};transport=tcp>", "<sip:alice@127.0.0.1>", OFFER)
            async with asyncio.timeout(5):
                inc = await b.incoming.get()
            inc.reject(486)
            async with asyncio.timeout(5):
                assert (await out.ended).status == 486
            if round_ == 0:
                for conn in list(b.endpoint._connections.values()):
                    assert conn.transport is not None
                    conn.transport.close()
                for _ in range(500):  # bounded wait for the close to reach a
                    if not a.endpoint._connections:
                        break
                    await asyncio.sleep(0.01)
                assert not a.endpoint._connections
    finally:
        await a.close()
        await b.close()
