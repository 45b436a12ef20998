"""The asyncio edge: TLS, reconnect back-off, limits checked before anything is stored."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from smpp.client import SmppClient
from smpp.gateway import Gateway
from smpp.outbox import MemoryOutbox, OutboundMessage, OutboxState
from smpp.routing import Route, Target
from smpp.segment import SegmentPolicy, TooManySegmentsError
from tests.smpp.fake_smsc import FakeSmsc
from tests.smpp.helpers import RecordingSink, smsc_config


async def _never(_c: SmppClient, _p: object) -> int:
    raise AssertionError("no deliver expected")


def test_reconnect_backoff_is_full_jitter_exponential_and_capped() -> None:
    cfg = smsc_config("a", 1)
    cfg = replace(cfg, reconnect_initial=1.0, reconnect_max=8.0)
    top = SmppClient(cfg, _never, rng=lambda: 1.0)
    assert [top._backoff(i) for i in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    half = SmppClient(cfg, _never, rng=lambda: 0.5)
    assert half._backoff(2) == 2.0
    low = SmppClient(cfg, _never, rng=lambda: 0.0)
    assert low._backoff(3) == 0.05  # never a zero-delay reconnect loop


async def test_too_long_message_is_refused_before_it_is_stored() -> None:
    outbox = MemoryOutbox()
    policy = SegmentPolicy(max_segments=2)
    gw = Gateway([smsc_config("a", 1)], [Route("", (Target("a"),), policy)], outbox, RecordingSink())
    assert gw.count_segments("+4915", "x" * 400) == 3
    with pytest.raises(TooManySegmentsError):
        await gw.send(OutboundMessage("long", "+4930", "+4915", "x" * 400))
    assert outbox.messages == {}


@pytest.fixture
def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl binary not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=smsc.test", "-addext", "subjectAltName=DNS:smsc.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_bind_and_submit_over_tls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    fake = FakeSmsc()
    fake.ssl = server_ctx
    await fake.start()
    cfg = smsc_config("tls", fake.port)
    cfg = replace(cfg, tls=client_ctx, server_hostname="smsc.test")
    outbox = MemoryOutbox()
    gw = Gateway([cfg], [Route("", (Target("tls"),))], outbox, RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await gw.send(OutboundMessage("t", "+4930", "+4915", "secret text"))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
        await fake.stop()
    assert [p.short_message for p in fake.accepted()] == [b"secret text"]
    assert outbox.messages["t"].state is OutboxState.SUBMITTED
