"""Credit end to end: a text refused without credit and sent after a top-up through the provisioning
API; a call cut when the balance runs out, charged as the rate table says. Its own Synapse and bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from tests.media.peers import dominant_frequency, rms_dbfs
from tests.peers.matrix import (
    BridgeProcess,
    Client,
    HttpError,
    Synapse,
    bridged_homeserver,
    dm_with,
    free_port,
    http,
    wait_until,
)
from tests.peers.smsc import NpmSmsc
from tests.telebridge.calling import Sipp, open_dm, place_call, poll, receive_answer, wait_for_call_events

pytestmark = pytest.mark.synapse
SECRET = "provisioning-secret-for-tests"
BOT = "@telebridgebot:localhost"


@pytest.fixture(scope="module")
def trunk_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, smsc: NpmSmsc, trunk_port: int
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    env = {
        "TELEBRIDGE_SMS__ENABLED": "true",
        "TELEBRIDGE_SMS__VMN_POOL": '["+447700900001"]',
        "TELEBRIDGE_SMS__SMSCS": smsc.smscs_setting(),
        "TELEBRIDGE_SMS__ROUTES": '[{prefix: "", smscs: [npm]}]',
        "TELEBRIDGE_CALLS__ENABLED": "true",
        "TELEBRIDGE_CALLS__SIP_PORT": str(free_port()),
        "TELEBRIDGE_CALLS__TRUNK": f"127.0.0.1:{trunk_port}",
        "TELEBRIDGE_CALLS__CALLER_ID": "+441632960001",
        "TELEBRIDGE_CALLS__MEDIA_WORKERS": "0",
        "TELEBRIDGE_CREDIT__ENABLED": "true",
        "TELEBRIDGE_CREDIT__PROVISIONING_SECRET": SECRET,
        "TELEBRIDGE_CREDIT__WARN_BEFORE_END": "2",
        "TELEBRIDGE_CREDIT__DENY_PREFIXES": '["1900"]',
        "TELEBRIDGE_LIMITS__SMS_PER_MINUTE": "3",
        "TELEBRIDGE_CREDIT__INBOUND__SMS": "2",
        # Texts 7 per part; calls 60 per minute billed per second (1/1), so 1 unit buys 1 second.
        "TELEBRIDGE_CREDIT__RATES": '[{prefix: "", sms: 7, call_minute: 60, connection_fee: 0, increments: [1, 1]}]',
    }
    with bridged_homeserver(tmp_path_factory.mktemp("credit"), env) as world:
        yield world


def provision(bridge: BridgeProcess, method: str, path: str, body: Any = None, token: str = SECRET) -> Any:
    return http(method, bridge.url + "/_telebridge/provision/v1" + path, body, token=token)


def top_up(
    bridge: BridgeProcess, user_id: str, amount: int, idempotency_key: str, token: str = SECRET
) -> Any:
    """A payment system crediting ``amount`` to ``user_id`` through the provisioning API."""
    body = {"user_id": user_id, "amount": amount, "idempotency_key": idempotency_key}
    return provision(bridge, "POST", "/topup", body, token=token)


def account_of(bridge: BridgeProcess, user_id: str) -> Any:
    """The user's balance, reservations and history, as the provisioning API reports them."""
    return provision(bridge, "GET", f"/balance/{user_id}")


def notices(client: Client, room_id: str, sender: str, containing: str) -> list[str]:
    """The bodies of the notices ``sender`` sent to the room that contain ``containing``."""
    return [
        e["content"]["body"]
        for e in client.messages(room_id)
        if e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == "m.notice"
        and containing in e["content"]["body"]
    ]


def test_a_text_without_credit_is_refused_and_goes_after_a_top_up(
    world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc
) -> None:
    synapse, bridge = world
    alice = synapse.new_user()
    room_id, phone = dm_with(alice, "+447700900321")
    alice.send_text(room_id, "no money")
    refusal = wait_until(lambda: notices(alice, room_id, phone, "credit"), what="the refusal")
    assert "top up" in refusal[0]
    assert smsc.submits_to("447700900321") == []

    with pytest.raises(HttpError) as wrong:
        top_up(bridge, alice.user_id, 10, "x", token="nope")
    assert wrong.value.status == 403
    for _ in range(2):  # a payment system retrying the same top-up
        top_up(bridge, alice.user_id, 10, "pay-1")
    alice.send_text(room_id, "now with money")
    smsc.wait_for_submits("447700900321", what="the text to go out")

    def settled() -> dict[str, Any] | None:
        account = account_of(bridge, alice.user_id)
        return account if account["reserved"] == 0 and account["balance"] == 3 else None

    account = wait_until(settled, what="the charge of one part at 7")
    assert [e["kind"] for e in account["history"]][:2] == ["charge", "reserve"]


def test_a_text_too_long_to_send_holds_no_credit(world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc) -> None:
    synapse, bridge = world
    alice = synapse.new_user()
    top_up(bridge, alice.user_id, 1000, f"l-{alice.user_id}")
    room_id, phone = dm_with(alice, "+447700900654")
    alice.send_text(room_id, "a" * 1700)  # 12 parts; the route allows 10
    assert wait_until(lambda: notices(alice, room_id, phone, "too long"), what="the notice")
    account = account_of(bridge, alice.user_id)
    assert (account["balance"], account["reserved"]) == (1000, 0)
    assert [e["kind"] for e in account["history"]] == ["topup"]
    assert smsc.submits_to("447700900654") == []


def test_texts_to_denied_prefixes_are_refused(world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc) -> None:
    synapse, bridge = world
    alice = synapse.new_user()
    top_up(bridge, alice.user_id, 1000, f"p-{alice.user_id}")
    room_id, phone = dm_with(alice, "+19005550199")
    alice.send_text(room_id, "premium")
    assert wait_until(lambda: notices(alice, room_id, phone, "blocked"), what="the refusal")
    assert smsc.submits_to("19005550199") == []


@pytest.mark.slow
async def test_a_call_is_cut_when_the_credit_runs_out_and_charged_per_the_rate_table(
    world: tuple[Synapse, BridgeProcess],
    trunk_port: int,
    browser: RTCPeerConnection,
    tmp_path: Path,
) -> None:
    synapse, bridge = world
    alice = await asyncio.to_thread(synapse.new_user)
    await asyncio.to_thread(top_up, bridge, alice.user_id, 4, f"c-{alice.user_id}")
    room_id, phone = await open_dm(alice, "+15005550150")
    with Sipp(tmp_path, "-sn", "uas", "-p", str(trunk_port)) as sipp:
        await place_call(alice, room_id, browser)
        answer = await receive_answer(alice, room_id, phone, browser, "the answer")
        # The trunk (sipp without -rtp_echo) sends no audio: what the caller hears is the bridge's warning.
        heard = await heard_frequencies(browser, seconds=6)
        assert heard and all(abs(f - 440) < 15 for f in heard), f"the warning beeps, heard {heard}"
        assert await asyncio.to_thread(sipp.wait) == 0, "the bridge hung up with BYE"
        hangup = (await wait_for_call_events(alice, room_id, "m.call.hangup", phone, "the hang-up"))[0]
        assert hangup["content"]["party_id"] == answer["party_id"], "clients ignore other parties"
        warned = await poll(lambda: notices(alice, room_id, phone, "runs out"), "the warning")
        assert "2 seconds" in warned[0]
        await poll(lambda: notices(alice, room_id, phone, "credit ran out"), "the end notice")

        def charged() -> dict[str, Any] | None:
            account = account_of(bridge, alice.user_id)
            return account if account["reserved"] == 0 and account["history"][0]["kind"] == "charge" else None

        account = await poll(charged, "the charge")
        assert account["balance"] == 0, "4 units bought 4 seconds at 1 per second, and 4 were charged"


async def heard_frequencies(pc: RTCPeerConnection, seconds: float) -> list[float]:
    """The dominant frequency of each loud 100 ms of what the peer's remote track plays, until the call's
    media stops or ``seconds`` pass."""
    track = pc.getReceivers()[0].track
    chunks: list[np.ndarray] = []
    rate = 8000
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            frame = await asyncio.wait_for(track.recv(), max(0.1, deadline - loop.time()))
        except Exception:  # the call ended (MediaStreamError) or went quiet
            break
        rate = frame.sample_rate
        chunks.append(frame.to_ndarray().reshape(-1)[:: len(frame.layout.channels)])
    if not chunks:
        return []
    audio = np.concatenate(chunks).astype(np.float64)
    step = rate // 10
    windows = [audio[i : i + step] for i in range(0, len(audio) - step, step)]
    return [dominant_frequency(w, rate) for w in windows if rms_dbfs(w) > -40]


def bot_replies(client: Client, room_id: str, containing: str) -> list[str]:
    """The bodies of the bridge bot's messages in the room that contain ``containing``."""
    return [
        e["content"]["body"]
        for e in client.messages(room_id)
        if e["type"] == "m.room.message" and e["sender"] == BOT and containing in e["content"]["body"]
    ]


def room_with_bot(client: Client, name: str) -> str:
    """A room the client opens with the bridge bot, once the bot has joined."""
    room_id = client.create_group([BOT], name=name)
    wait_until(lambda: BOT in client.joined_members(room_id), what="the bot to join")
    return room_id


def test_admins_top_up_and_users_read_their_balance_in_a_room_with_the_bot(
    world: tuple[Synapse, BridgeProcess],
) -> None:
    synapse, _ = world
    admin = synapse.user("admin")
    bob = synapse.new_user("bob")
    admin_room = room_with_bot(admin, "bridge admin")
    admin.send_text(admin_room, f"credit add {bob.user_id} 250")
    assert wait_until(lambda: bot_replies(admin, admin_room, "now has EUR 2.50"), what="the top-up")

    bob_room = room_with_bot(bob, "my credit")
    bob.send_text(bob_room, "balance")
    assert wait_until(lambda: bot_replies(bob, bob_room, "EUR 2.50"), what="the balance")
    bob.send_text(bob_room, f"credit add {bob.user_id} 100000")
    assert wait_until(lambda: bot_replies(bob, bob_room, "Only bridge admins"), what="the refusal")


def test_a_user_texting_too_fast_is_told_to_wait(world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc) -> None:
    synapse, bridge = world
    alice = synapse.new_user()
    top_up(bridge, alice.user_id, 1000, f"r-{alice.user_id}")
    room_id, phone = dm_with(alice, "+447700900555")
    for i in range(4):
        alice.send_text(room_id, f"text {i}")
    assert wait_until(lambda: notices(alice, room_id, phone, "texts a minute"), what="the refusal")
    smsc.wait_for_submits("447700900555", 3, what="three texts")
    assert [s["message"] for s in smsc.submits_to("447700900555")] == ["text 0", "text 1", "text 2"]


def test_a_text_received_is_charged_at_the_inbound_rate(
    world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc
) -> None:
    synapse, bridge = world
    alice = synapse.new_user()
    top_up(bridge, alice.user_id, 100, f"i-{alice.user_id}")
    room_id, _ = dm_with(alice, "+447700900777")
    alice.send_text(room_id, "hello")
    sent = smsc.wait_for_submits("447700900777", what="the text")[0]
    smsc.deliver("447700900777", sent["source_addr"], "hi back")

    def balance() -> int | None:
        account = account_of(bridge, alice.user_id)
        return account["balance"] if account["reserved"] == 0 else None

    assert wait_until(lambda: balance() == 100 - 7 - 2, what="7 for the text sent, 2 for the one received")
