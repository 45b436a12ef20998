"""Identity-server lookups (Identity Service API v2): the hash, the flow against a v2 server, and the
dial pad answering with the real user through Synapse."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from telebridge.identity import IdentityLookup, hashed_msisdn, lookup_hash
from tests.peers.matrix import (
    REPO,
    BridgeProcess,
    Client,
    Synapse,
    bridged_homeserver,
    free_port,
    http,
    wait_until,
)


def test_lookup_hash_matches_the_spec_example() -> None:
    # Identity Service API, "Client behaviour" example for the sha256 algorithm.
    assert (
        lookup_hash("alice@example.com", "email", "matrixrocks")
        == "4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc"
    )
    assert hashed_msisdn("+15005550006", "p") == lookup_hash("15005550006", "msisdn", "p")


class IdentityServer:
    def __init__(self, *bindings: str, terms: bool = True) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "tests.peers.identity", "--port", str(self.port)]
        for binding in bindings:
            args += ["--bind", binding]
        if terms:
            args.append("--terms")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: self._up(), what="the identity server")

    def _up(self) -> bool:
        http("GET", self.url + "/_matrix/identity/v2/terms", timeout=2)
        return True

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def identity_server() -> Iterator[IdentityServer]:
    server = IdentityServer("+15005550006=@bob:localhost")
    try:
        yield server
    finally:
        server.stop()


async def fake_openid() -> dict[str, object]:
    return {
        "access_token": "x",
        "token_type": "Bearer",
        "matrix_server_name": "localhost",
        "expires_in": 3600,
    }


async def test_lookup_registers_accepts_terms_and_survives_a_pepper_change(
    identity_server: IdentityServer,
) -> None:
    lookup = IdentityLookup([identity_server.url], fake_openid, cache_ttl=0)
    try:
        assert await lookup.lookup("+15005550006") == "@bob:localhost"
        assert await lookup.lookup("+15005550007") is None
        http("POST", identity_server.url + "/_test/rotate_pepper", {})
        assert await lookup.lookup("+15005550006") == "@bob:localhost"
    finally:
        await lookup.close()


async def test_an_unreachable_identity_server_falls_back_quickly() -> None:
    lookup = IdentityLookup([f"http://127.0.0.1:{free_port()}"], fake_openid, timeout=0.5)
    try:
        assert await lookup.lookup("+15005550006") is None
    finally:
        await lookup.close()


@pytest.fixture(scope="module")
def identity_world(
    tmp_path_factory: pytest.TempPathFactory, identity_server: IdentityServer
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    env = {"TELEBRIDGE_IDENTITY__SERVERS": f"[{identity_server.url}]"}
    with bridged_homeserver(tmp_path_factory.mktemp("identity"), env) as world:
        yield world


@pytest.mark.synapse
def test_dial_pad_lookup_prefers_the_real_user_an_identity_server_knows(
    identity_world: tuple[Synapse, BridgeProcess],
) -> None:
    synapse, _ = identity_world
    alice: Client = synapse.register(f"alice{uuid.uuid4().hex[:8]}")
    known = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+1 500 555 0006"})
    assert known == [
        {
            "userid": "@bob:localhost",
            "protocol": "m.protocol.pstn",
            "fields": {"m.id.phone": "+1 500 555 0006"},
        }
    ]
    unknown = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+15005550007"})
    assert unknown[0]["userid"].startswith("@_sip_")
