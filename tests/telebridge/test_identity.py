"""Identity-server lookups (Identity Service API v2) against matrix-sydent, the reference identity server:
OpenID tokens checked by a real Synapse over federation, terms, hash_details, hashed msisdn lookups, a
rotated pepper, forgotten access tokens, and Element's dial pad answering with the real user.

The faults sydent cannot be made to show (no answer at all, nobody listening) use plain sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from ruamel.yaml import YAML

from telebridge.identity import IdentityLookup, OpenIdToken, hashed_msisdn, lookup_hash
from tests.peers.matrix import BridgeProcess, Client, Synapse, bridged_homeserver, free_port, q, wait_until
from tests.peers.smsc import NpmSmsc
from tests.peers.sydent import Sydent, sydent_python, terms_url


def test_lookup_hash_matches_the_spec_example() -> None:
    # Identity Service API, "Client behaviour" example for the sha256 algorithm.
    assert (
        lookup_hash("alice@example.com", "email", "matrixrocks")
        == "4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc"
    )
    assert hashed_msisdn("+15005550006", "p") == lookup_hash("15005550006", "msisdn", "p")


@pytest.fixture(scope="module")
def sydent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sydent]:
    server = Sydent(tmp_path_factory.mktemp("sydent"), sydent_python())
    server.start()
    try:
        yield server
    finally:
        server.stop()


OWNED = "+447700900099"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, sydent: Sydent, smsc: NpmSmsc
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    """Synapse reachable over federation (sydent checks OpenID tokens with it) and a bridge using sydent,
    with texts on (``OWNED`` belongs to ``@owner``)."""
    env = {
        "TELEBRIDGE_IDENTITY__SERVERS": f"[{sydent.url}]",
        "TELEBRIDGE_SMS__ENABLED": "true",
        "TELEBRIDGE_SMS__ORIGINATION": "vmn_pool",
        "TELEBRIDGE_SMS__VMN_POOL": '["+447700900901"]',
        "TELEBRIDGE_SMS__OWNED_NUMBERS": f'{{"{OWNED}": "@owner:{{server_name}}"}}',
        "TELEBRIDGE_SMS__SMSCS": smsc.smscs_setting(),
        "TELEBRIDGE_SMS__ROUTES": '[{prefix: "", smscs: [npm]}]',
    }
    with bridged_homeserver(tmp_path_factory.mktemp("identity"), env, federation=True) as homeserver:
        yield homeserver


def openid_of(client: Client) -> OpenIdToken:
    """Client-Server "OpenID" for a test user: the token sydent will verify with the homeserver."""

    async def request_token() -> dict[str, Any]:
        path = f"/_matrix/client/v3/user/{q(client.user_id)}/openid/request_token"
        token: dict[str, Any] = await asyncio.to_thread(client.call, "POST", path, {})
        return token

    return request_token


def requests_seen(sydent: Sydent, method: str, path: str, status: int) -> int:
    """How many such requests sydent's access log shows (what the identity server actually received)."""
    line = re.compile(rf'"{method} {re.escape(path)}[? ][^"]*" {status} ')
    return sum(1 for entry in sydent.log_text().splitlines() if line.search(entry))


def unique_number() -> str:
    """A fresh North American test number, so tests sharing one sydent never see each other's bindings."""
    return "+1500555" + str(uuid.uuid4().int % 10_000).zfill(4)


def bound_user(synapse: Synapse, sydent: Sydent, name: str) -> tuple[Client, str]:
    """A new user and a fresh number sydent maps to them."""
    client = synapse.new_user(name)
    number = unique_number()
    sydent.bind(number, client.user_id)
    return client, number


@asynccontextmanager
async def identity_lookup(
    servers: list[str], token: OpenIdToken, **options: Any
) -> AsyncIterator[IdentityLookup]:
    """The bridge's identity lookup on ``servers``, closed when the block ends."""
    lookup = IdentityLookup(servers, token, **options)
    try:
        yield lookup
    finally:
        await lookup.close()


def sydent_lookup(
    sydent: Sydent, token: OpenIdToken, *, accept_terms: bool = True
) -> AbstractAsyncContextManager[IdentityLookup]:
    """:func:`identity_lookup` on sydent alone, uncached, with a 10 s timeout."""
    return identity_lookup([sydent.url], token, accept_terms=accept_terms, cache_ttl=0, timeout=10)


@pytest.mark.synapse
def test_dial_pad_lookup_reaches_the_real_user_sydent_maps_the_number_to(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, bridge = world
    alice = synapse.new_user("alice")
    bob = synapse.new_user("bob")
    sydent.bind("+15005550006", bob.user_id)

    known = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+1 500 555 0006"})
    assert known == [
        {"userid": bob.user_id, "protocol": "m.protocol.pstn", "fields": {"m.id.phone": "+1 500 555 0006"}}
    ]
    unknown = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+15005550007"})
    assert unknown[0]["userid"].startswith("@_sip_")
    # The bridge bot registered with a token sydent checked with Synapse, and accepted sydent's terms.
    registration = YAML(typ="safe").load(bridge.registration.read_text())
    bot = f"@{registration['sender_localpart']}:{synapse.server_name}"
    assert sydent.accounts()[bot] == "1.0"


@pytest.mark.synapse
def test_dial_pad_lookup_after_sydent_rotates_its_pepper(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world
    alice = synapse.new_user("alice")
    # The bridge has looked a number up before, so it holds sydent's current pepper.
    alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": unique_number()})
    sydent.rotate_pepper()
    carol, number = bound_user(synapse, sydent, "carol")

    found = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": number})

    assert found[0]["userid"] == carol.user_id
    assert requests_seen(sydent, "POST", "/_matrix/identity/v2/lookup", 400) >= 1  # M_INVALID_PEPPER


@pytest.mark.synapse
async def test_lookup_refetches_the_pepper_once_sydent_has_rotated_it(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world
    dave, number = bound_user(synapse, sydent, "dave")
    async with sydent_lookup(sydent, openid_of(dave)) as lookup:
        assert await lookup.lookup(number) == dave.user_id
        refused = requests_seen(sydent, "POST", "/_matrix/identity/v2/lookup", 400)
        fetched = requests_seen(sydent, "GET", "/_matrix/identity/v2/hash_details", 200)
        new_pepper = sydent.rotate_pepper()

        assert await lookup.lookup(number) == dave.user_id
        assert await lookup.lookup(unique_number()) is None

        assert requests_seen(sydent, "POST", "/_matrix/identity/v2/lookup", 400) == refused + 1
        assert requests_seen(sydent, "GET", "/_matrix/identity/v2/hash_details", 200) == fetched + 1
        assert hashed_msisdn(number, new_pepper) in sydent.lookup_hashes()


@pytest.mark.synapse
async def test_lookup_registers_again_when_sydent_forgets_its_access_token(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world
    erin, number = bound_user(synapse, sydent, "erin")
    async with sydent_lookup(sydent, openid_of(erin)) as lookup:
        assert await lookup.lookup(number) == erin.user_id
        registered = requests_seen(sydent, "POST", "/_matrix/identity/v2/account/register", 200)
        sydent.forget_access_tokens()

        assert await lookup.lookup(number) == erin.user_id
        assert requests_seen(sydent, "POST", "/_matrix/identity/v2/account/register", 200) == registered + 1


@pytest.mark.synapse
async def test_lookup_recovers_when_sydent_restarts_without_its_tokens_and_with_a_new_pepper(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    # A restore from an older backup plus a rotated pepper: the client's token and pepper are both stale,
    # and /hash_details as well as /lookup answer 401 until it registers again.
    synapse, _ = world
    grace, number = bound_user(synapse, sydent, "grace")
    async with sydent_lookup(sydent, openid_of(grace)) as lookup:
        assert await lookup.lookup(number) == grace.user_id
        sydent.rotate_pepper()
        sydent.forget_access_tokens()

        assert await lookup.lookup(number) == grace.user_id


@pytest.mark.synapse
async def test_lookup_accepts_the_terms_again_when_sydent_publishes_new_ones(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world
    heidi, number = bound_user(synapse, sydent, "heidi")
    async with sydent_lookup(sydent, openid_of(heidi)) as lookup:
        assert await lookup.lookup(number) == heidi.user_id
        sydent.publish_terms("2.0")
        try:
            assert await lookup.lookup(number) == heidi.user_id
            assert sydent.accounts()[heidi.user_id] == "2.0"
            assert terms_url("2.0") in sydent.accepted_terms(heidi.user_id)
        finally:
            sydent.publish_terms("1.0")


@pytest.mark.synapse
async def test_a_bridge_that_may_not_accept_the_terms_gets_no_answers(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world
    frank, number = bound_user(synapse, sydent, "frank")
    async with sydent_lookup(sydent, openid_of(frank), accept_terms=False) as refusing:
        assert await refusing.lookup(number) is None  # sydent answers 403 M_TERMS_NOT_SIGNED
        assert sydent.accounts()[frank.user_id] is None
    async with sydent_lookup(sydent, openid_of(frank)) as accepting:
        assert await accepting.lookup(number) == frank.user_id
        assert sydent.accounts()[frank.user_id] == "1.0"
        assert terms_url("1.0") in sydent.accepted_terms(frank.user_id)


@pytest.mark.synapse
async def test_sydent_refuses_an_openid_token_the_homeserver_did_not_issue(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent
) -> None:
    synapse, _ = world

    async def forged() -> dict[str, Any]:
        return {
            "access_token": "not-issued-by-synapse",
            "token_type": "Bearer",
            "matrix_server_name": synapse.server_name,
            "expires_in": 3600,
        }

    async with sydent_lookup(sydent, forged) as lookup:
        assert await lookup.lookup("+15005550006") is None


async def any_token() -> dict[str, Any]:
    """An OpenID token for servers that never get to check it."""
    return {"access_token": "x", "token_type": "Bearer", "matrix_server_name": "127.0.0.1", "expires_in": 60}


async def test_an_unreachable_identity_server_falls_back_to_the_virtual_user() -> None:
    async with identity_lookup([f"http://127.0.0.1:{free_port()}"], any_token, timeout=0.5) as lookup:
        assert await lookup.lookup("+15005550006") is None


async def test_an_identity_server_that_never_answers_falls_back_to_the_virtual_user() -> None:
    # The kernel completes the TCP handshake for a listening socket nobody accepts from: a server that
    # takes the request and hangs, which sydent cannot be made to do.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with identity_lookup([url], any_token, timeout=0.5) as lookup:
            assert await lookup.lookup("+15005550006") is None


@pytest.mark.synapse
def test_a_text_from_a_number_sydent_knows_tells_the_owner_who_it_is(
    world: tuple[Synapse, BridgeProcess], sydent: Sydent, smsc: NpmSmsc
) -> None:
    synapse, _ = world
    owner = synapse.user("owner")
    erin, number = bound_user(synapse, sydent, "erin")
    smsc.deliver(number[1:], OWNED[1:], "Hi, it's Erin")

    room_id = wait_until(owner.first_invite, what="the DM the text opens")
    owner.call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/join", {})

    def said() -> list[str]:
        return [
            e["content"]["body"]
            for e in owner.messages(room_id)
            if e["type"] == "m.room.message" and e["sender"].startswith("@_sip_")
        ]

    bodies = wait_until(lambda: len(said()) >= 2 and said(), what="the text and the notice")
    assert "Hi, it's Erin" in bodies
    assert f"{number} belongs to {erin.user_id} on Matrix; you can also message them there." in bodies
