"""SMS end to end: Element-style client → Synapse → telebridge → npm SMSC, and back.

This module runs its own Synapse and bridge (with SMS on) so the SMS-less bridge of the other end-to-end
tests keeps its behaviour. The SMSC is the npm ``smpp`` package's server, which we did not write.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.matrix import BridgeProcess, Client, Synapse, bridged_homeserver, dm_with, wait_until
from tests.peers.smsc import NpmSmsc

pytestmark = pytest.mark.synapse

POOL = ["+447700900001", "+447700900002"]
OWNED = "+447700900099"


@pytest.fixture(scope="module")
def sms_world(
    tmp_path_factory: pytest.TempPathFactory, smsc: NpmSmsc
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    env = {
        "TELEBRIDGE_SMS__ENABLED": "true",
        "TELEBRIDGE_SMS__ORIGINATION": "vmn_pool",
        "TELEBRIDGE_SMS__VMN_POOL": "[" + ", ".join(f'"{n}"' for n in POOL) + "]",
        "TELEBRIDGE_SMS__OWNED_NUMBERS": f'{{"{OWNED}": "@owner:localhost"}}',
        "TELEBRIDGE_SMS__SMSCS": smsc.smscs_setting(window=64),
        "TELEBRIDGE_SMS__ROUTES": '[{prefix: "", smscs: [npm], max_segments: 4}]',
        "TELEBRIDGE_SMS__REASSEMBLY_TIMEOUT": "5",
        # An operator's own opt-out words beside the carriers' (here: French).
        "TELEBRIDGE_SMS__KEYWORDS__STOP": "[STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, ARRET]",
        "TELEBRIDGE_SMS__KEYWORDS__START": "[START, UNSTOP, YES, REPRISE]",
    }
    with bridged_homeserver(tmp_path_factory.mktemp("sms"), env) as world:
        yield world


@pytest.fixture
def synapse(sms_world: tuple[Synapse, BridgeProcess]) -> Synapse:
    return sms_world[0]


def texts_from(client: Client, room_id: str, sender: str, msgtype: str = "m.text") -> list[dict[str, Any]]:
    return [
        e
        for e in client.messages(room_id)
        if e["type"] == "m.room.message" and e["sender"] == sender and e["content"].get("msgtype") == msgtype
    ]


def notices_from(client: Client, room_id: str, sender: str) -> list[str]:
    """The bodies of the bridge's notices from ``sender`` in the room."""
    return [n["content"]["body"] for n in texts_from(client, room_id, sender, "m.notice")]


def test_dm_text_goes_out_from_a_pool_number_and_the_reply_lands_in_the_same_room(
    synapse: Synapse, smsc: NpmSmsc
) -> None:
    alice = synapse.new_user()
    room_id, phone_user = dm_with(alice, "+447700900123")
    alice.send_text(room_id, "Hello phone")
    submit = smsc.wait_for(
        lambda: next((s for s in smsc.submits_to("447700900123") if s["message"] == "Hello phone"), None),
        what="the submit_sm",
    )
    assert submit["source_addr"] in {n[1:] for n in POOL}
    assert submit["registered_delivery"] == 1

    smsc.deliver("447700900123", submit["source_addr"], "Hi Alice")
    reply = wait_until(lambda: texts_from(alice, room_id, phone_user), what="the reply in the DM")
    assert reply[-1]["content"]["body"] == "Hi Alice"


def test_two_users_texting_one_phone_get_different_numbers_and_replies_route_back(
    synapse: Synapse, smsc: NpmSmsc
) -> None:
    phone = "+447700900200"
    alice, bob = synapse.new_user("alice"), synapse.new_user("bob")
    rooms = {}
    for client in (alice, bob):
        room_id, phone_user = dm_with(client, phone)
        rooms[client.user_id] = (room_id, phone_user)
        client.send_text(room_id, f"from {client.user_id}")
    submits = smsc.wait_for_submits(phone[1:], 2, what="both")
    by_sender = {s["message"].split("from ", 1)[1]: s["source_addr"] for s in submits}
    assert by_sender[alice.user_id] != by_sender[bob.user_id]

    for client in (alice, bob):
        smsc.deliver(phone[1:], by_sender[client.user_id], f"reply for {client.user_id}")
    for client in (alice, bob):
        room_id, phone_user = rooms[client.user_id]
        got = wait_until(lambda c=client, r=room_id, p=phone_user: texts_from(c, r, p), what="the reply")
        assert [e["content"]["body"] for e in got] == [f"reply for {client.user_id}"]


def test_long_emoji_text_goes_out_as_three_ucs2_parts_with_one_udh_reference(
    synapse: Synapse, smsc: NpmSmsc
) -> None:
    alice = synapse.new_user()
    room_id, _ = dm_with(alice, "+447700900300")
    # 99 emoji = 198 UTF-16 code units (396 octets). A UCS-2 part with an 8-bit UDH holds 67 units, but a
    # surrogate pair is never split, so each part carries 33 emoji: exactly 3 parts.
    text = "😀" * 99
    alice.send_text(room_id, text)
    parts = smsc.wait_for_submits("447700900300", 3, what="3 parts")
    assert len(parts) == 3
    assert {p["data_coding"] for p in parts} == {8}
    udhs = [p["udh"][0] for p in parts]  # the npm SMSC shows each UDH element: 00 03 <ref> <total> <seq>
    assert {u[:4] for u in udhs} == {"0003"}, "8-bit concatenation element"
    assert len({u[4:6] for u in udhs}) == 1, "one reference for all parts"
    assert [u[6:8] for u in udhs] == ["03"] * 3
    assert sorted(u[8:10] for u in udhs) == ["01", "02", "03"]
    assert "".join(p["message"] for p in sorted(parts, key=lambda p: p["udh"][0][8:10])) == text


def test_too_long_text_is_refused_with_a_notice_and_nothing_is_sent(synapse: Synapse, smsc: NpmSmsc) -> None:
    alice = synapse.new_user()
    room_id, phone_user = dm_with(alice, "+447700900301")
    alice.send_text(room_id, "x" * 800)  # 6 GSM parts; the route allows 4
    notice = wait_until(lambda: texts_from(alice, room_id, phone_user, "m.notice"), what="the notice")
    assert "too long" in notice[-1]["content"]["body"]
    assert smsc.submits_to("447700900301") == []


def test_delivery_receipts_become_a_read_receipt_or_a_failure_notice(synapse: Synapse, smsc: NpmSmsc) -> None:
    alice = synapse.new_user()
    room_id, phone_user = dm_with(alice, "+447700900400")
    first = alice.send_text(room_id, "will arrive")
    sub = smsc.wait_for_submits("447700900400")[0]
    since = alice.call("GET", "/_matrix/client/v3/sync?timeout=0")["next_batch"]
    smsc.receipt(sub, "d1", "DELIVRD")

    def read_up_to() -> str | None:
        """New receipts arrive in incremental syncs (initial syncs may leave other users' receipts out)."""
        nonlocal since
        sync = alice.call("GET", f"/_matrix/client/v3/sync?timeout=500&since={since}")
        since = sync["next_batch"]
        room = sync["rooms"].get("join", {}).get(room_id, {})
        for ev in room.get("ephemeral", {}).get("events", []):
            if ev["type"] == "m.receipt":
                for event_id, kinds in ev["content"].items():
                    if phone_user in kinds.get("m.read", {}):
                        return str(event_id)
        return None

    assert wait_until(read_up_to, what="the read receipt") == first

    alice.send_text(room_id, "will fail")
    second = smsc.wait_for_submits("447700900400", 2, what="2nd")[1]
    smsc.receipt(second, "d2", "UNDELIV", err="001")
    notice = wait_until(lambda: texts_from(alice, room_id, phone_user, "m.notice"), what="the failure notice")
    assert "Not delivered" in notice[-1]["content"]["body"]


def test_stop_opts_the_phone_out_and_start_opts_it_back_in(synapse: Synapse, smsc: NpmSmsc) -> None:
    alice = synapse.new_user()
    room_id, phone_user = dm_with(alice, "+447700900500")
    alice.send_text(room_id, "first")
    sub = smsc.wait_for_submits("447700900500")[0]
    smsc.deliver("447700900500", sub["source_addr"], "STOP")
    wait_until(lambda: any("STOP" in n for n in notices_from(alice, room_id, phone_user)), what="STOP notice")
    confirmation = smsc.wait_for_submits("447700900500", 2, what="confirmation")[1]
    assert "START" in confirmation["message"]

    alice.send_text(room_id, "are you there?")
    wait_until(
        lambda: any("opted out" in n for n in notices_from(alice, room_id, phone_user)), what="opt-out notice"
    )
    assert len(smsc.submits_to("447700900500")) == 2


def test_group_room_relays_to_every_phone_with_the_senders_name(synapse: Synapse, smsc: NpmSmsc) -> None:
    alice = synapse.new_user()
    phones = ["+447700900601", "+447700900602"]
    users = [alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": p})[0]["userid"] for p in phones]
    room_id = alice.create_group(users)
    wait_until(lambda: set(users) <= alice.joined_members(room_id), what="both phones to join")
    alice.send_text(room_id, "hello group")
    for phone in phones:
        sub = smsc.wait_for(lambda p=phone: smsc.submits_to(p[1:]), what=f"the text to {phone}")[0]
        assert sub["message"].endswith(": hello group")
        assert alice.user_id.split(":")[0][1:] in sub["message"]
    # A phone's reply reaches the room and the other phone.
    first_source = smsc.submits_to(phones[0][1:])[0]["source_addr"]
    smsc.deliver(phones[0][1:], first_source, "hi all")
    wait_until(lambda: texts_from(alice, room_id, users[0]), what="the reply in the room")
    relayed = smsc.wait_for_submits(phones[1][1:], 2, what="relay")[1]
    assert relayed["message"] == f"{phones[0]}: hi all"


def test_text_from_an_unknown_phone_to_an_owned_number_opens_a_dm_with_the_owner(
    synapse: Synapse, smsc: NpmSmsc
) -> None:
    owner = synapse.user("owner")
    smsc.deliver("447700900777", OWNED[1:], "Is this Owner?")

    room_id = wait_until(owner.first_invite, what="the invite")
    owner.call("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {})
    phone_user = owner.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+447700900777"})[0]["userid"]
    got = wait_until(lambda: texts_from(owner, room_id, phone_user), what="the text in the new DM")
    assert got[0]["content"]["body"] == "Is this Owner?"


def test_queued_texts_survive_a_crash_and_go_out_in_order_after_restart(
    sms_world: tuple[Synapse, BridgeProcess], smsc: NpmSmsc
) -> None:
    synapse, bridge = sms_world
    alice = synapse.new_user()
    room_id, _ = dm_with(alice, "+447700900800")
    smsc.command(cmd="reject_submits", status=0x58, count=10_000)  # ESME_RTHROTTLED: keep them queued
    for i in range(5):
        alice.send_text(room_id, f"queued {i}")
    smsc.wait_for(
        lambda: [r for r in smsc.events("submit_rejected") if r["destination_addr"] == "447700900800"],
        what="the first throttled submit",
    )
    bridge.kill()
    smsc.command(cmd="reject_submits", status=0, count=0)
    bridge.start()
    got = smsc.wait_for_submits("447700900800", 5, what="5")
    assert [s["message"] for s in got] == [f"queued {i}" for i in range(5)]


def test_an_operators_own_keywords_opt_out_and_back_in(synapse: Synapse, smsc: NpmSmsc) -> None:
    alice = synapse.new_user()
    room_id, phone_user = dm_with(alice, "+447700900510")
    alice.send_text(room_id, "bonjour")
    sub = smsc.wait_for_submits("447700900510")[0]
    smsc.deliver("447700900510", sub["source_addr"], " arret ")

    def notices() -> list[str]:
        return notices_from(alice, room_id, phone_user)

    wait_until(lambda: any("texted ARRET" in n for n in notices()), what="the opt-out notice")
    alice.send_text(room_id, "still there?")
    wait_until(lambda: any("opted out" in n for n in notices()), what="the refusal")
    smsc.deliver("447700900510", sub["source_addr"], "Reprise")
    wait_until(lambda: any("texted REPRISE" in n for n in notices()), what="the opt-in notice")
    alice.send_text(room_id, "welcome back")
    smsc.wait_for(
        lambda: any(s["message"] == "welcome back" for s in smsc.submits_to("447700900510")), what="the text"
    )
