"""End to end through a real Synapse, as Element does it: dial-pad lookup, DM, messages, kicks, tokens.

Runs once per database backend (the ``bridge`` fixture is parametrised over SQLite and PostgreSQL).
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from typing import Any

import pytest

from tests.peers.matrix import BridgeProcess, Client, HttpError, Synapse, http, wait_until

pytestmark = pytest.mark.synapse

GATEWAY = "sip.example.org"


def virtual_user(number: str) -> str:
    return (
        "@_sip_"
        + urllib.parse.quote(f"{number}@{GATEWAY}", safe="").lower().replace("%2e", ".")
        + ":localhost"
    )


@pytest.fixture
def alice(synapse: Synapse, bridge: BridgeProcess) -> Client:
    return synapse.register(f"alice{uuid.uuid4().hex[:8]}")


def notices_from(client: Client, room_id: str, sender: str) -> list[dict[str, Any]]:
    return [
        e
        for e in client.messages(room_id)
        if e["type"] == "m.room.message"
        and e["sender"] == sender
        and e["content"].get("msgtype") == "m.notice"
    ]


def reply_target(event: dict[str, Any]) -> str | None:
    return event["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")


def open_dm(alice: Client, number: str) -> tuple[str, str]:
    user_id = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": number})[0]["userid"]
    room_id = alice.create_dm(user_id)
    wait_until(lambda: user_id in alice.joined_members(room_id), what=f"{user_id} to join the DM")
    return room_id, user_id


def send_and_wait_for_notice(alice: Client, room_id: str, user_id: str, text: str) -> dict[str, Any]:
    event_id = alice.send_text(room_id, text)
    return wait_until(
        lambda: next((n for n in notices_from(alice, room_id, user_id) if reply_target(n) == event_id), None),
        what="the virtual user's notice",
    )


def test_protocols_list_pstn_with_instances(alice: Client) -> None:
    protocols = alice.protocols()
    for name in ("m.protocol.pstn", "im.vector.protocol.pstn"):
        assert protocols[name]["user_fields"] == ["m.id.phone"]
        assert protocols[name]["location_fields"] == []
        assert protocols[name]["instances"], "Synapse drops protocols without instances"
        assert "m.id.phone" in protocols[name]["field_types"]


def test_dial_pad_lookup_returns_the_sip_user_for_the_number_as_dialled(alice: Client) -> None:
    result = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "01818118181"})
    assert result == [
        {
            "userid": "@_sip_01818118181%40sip.example.org:localhost",
            "protocol": "m.protocol.pstn",
            "fields": {"m.id.phone": "01818118181"},
        }
    ]
    unstable = alice.thirdparty_user("im.vector.protocol.pstn", **{"m.id.phone": "+442079460000"})
    assert unstable[0]["userid"] == virtual_user("+442079460000")
    assert unstable[0]["fields"] == {"m.id.phone": "+442079460000"}
    # Created lazily on lookup, with the number formatted for humans as its display name.
    assert alice.profile(unstable[0]["userid"])["displayname"] == "+44 20 7946 0000"


def test_lookup_of_a_non_dialable_value_is_a_400_from_the_bridge(bridge: BridgeProcess) -> None:
    base = bridge.url + "/_matrix/app/v1/thirdparty/user/m.protocol.pstn"
    with pytest.raises(HttpError) as bad:
        http("GET", base + "?m.id.phone=call%20me", token=bridge.hs_token)
    assert (bad.value.status, bad.value.body["errcode"]) == (400, "M_INVALID_PARAM")
    with pytest.raises(HttpError) as twice:
        http("GET", base + "?m.id.phone=123&m.id.phone=456", token=bridge.hs_token)
    assert (twice.value.status, twice.value.body["errcode"]) == (400, "M_INVALID_PARAM")
    reverse = http(
        "GET",
        bridge.url + "/_matrix/app/v1/thirdparty/user?userid=" + urllib.parse.quote(virtual_user("*100#")),
        token=bridge.hs_token,
    )
    assert reverse == [
        {"userid": virtual_user("*100#"), "protocol": "m.protocol.pstn", "fields": {"m.id.phone": "*100#"}}
    ]


def test_user_query_creates_valid_virtual_users_and_rejects_others(bridge: BridgeProcess) -> None:
    def query(user_id: str) -> int:
        try:
            http(
                "GET",
                bridge.url + "/_matrix/app/v1/users/" + urllib.parse.quote(user_id),
                token=bridge.hs_token,
            )
        except HttpError as e:
            return e.status
        return 200

    assert query(virtual_user("0123456")) == 200
    assert query("@_sip_hello%40sip.example.org:localhost") == 404  # not a number
    assert query("@_sip_0123%40evil.example.com:localhost") == 404  # not our gateway
    assert query("@_sip_0123%2B%40sip.example.org:localhost") == 404  # not the canonical encoding


def test_invited_virtual_user_joins_the_dm_and_the_bot_stays_out(
    alice: Client, bridge: BridgeProcess
) -> None:
    room_id, user_id = open_dm(alice, "+15005550006")
    assert alice.joined_members(room_id) == {alice.user_id, user_id}


def test_a_message_gets_a_notice_saying_why_it_was_not_delivered(alice: Client) -> None:
    room_id, user_id = open_dm(alice, "07700900123")
    notice = send_and_wait_for_notice(alice, room_id, user_id, "hello phone")
    assert "07700900123" in notice["content"]["body"]
    assert "cannot be delivered" in notice["content"]["body"]


def test_every_virtual_user_in_a_group_room_answers(alice: Client) -> None:
    users = [
        alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": n})[0]["userid"] for n in ("0111", "0222")
    ]
    room_id = alice.create_group(users)
    wait_until(lambda: set(users) <= alice.joined_members(room_id), what="both virtual users to join")
    event_id = alice.send_text(room_id, "hello all")
    for user_id in users:
        wait_until(
            lambda u=user_id: any(reply_target(n) == event_id for n in notices_from(alice, room_id, u)),
            what=f"a notice from {user_id}",
        )


def test_kick_ends_the_portal(alice: Client) -> None:
    # Element's DMs (trusted_private_chat) give the invitee equal power, so kicks happen in rooms like this.
    user_id = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "0333"})[0]["userid"]
    room_id = alice.create_group([user_id])
    wait_until(lambda: user_id in alice.joined_members(room_id), what="the virtual user to join")
    alice.kick(room_id, user_id, "wrong number")
    wait_until(lambda: user_id not in alice.joined_members(room_id), what="the kick")
    kicked_msg = alice.send_text(room_id, "are you still there?")
    # The bridge handles events in order: once a later message elsewhere is answered, the earlier one was
    # seen too, so the absence of an answer in the kicked room is not a matter of waiting longer.
    other_room, other_user = open_dm(alice, "0444")
    send_and_wait_for_notice(alice, other_room, other_user, "barrier")
    assert not [n for n in notices_from(alice, room_id, user_id) if reply_target(n) == kicked_msg]


def test_a_user_without_permission_is_refused_with_a_reason(synapse: Synapse, bridge: BridgeProcess) -> None:
    mallory = synapse.user("mallory")
    user_id = mallory.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "0888"})[0]["userid"]
    room_id = mallory.create_dm(user_id)

    def refusal() -> dict[str, Any] | None:
        state = mallory.call(
            "GET",
            f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/state/m.room.member/{urllib.parse.quote(user_id)}",
        )
        return state if state.get("membership") == "leave" else None

    assert "not allowed" in wait_until(refusal, what="the invite to be refused")["reason"]


def test_leaving_the_dm_makes_the_virtual_user_leave_too(alice: Client, synapse: Synapse) -> None:
    room_id, _ = open_dm(alice, "0999")
    bob = synapse.register(f"bob{uuid.uuid4().hex[:8]}")
    alice.invite(room_id, bob.user_id)
    bob.call("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {})
    alice.call("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/leave", {})
    wait_until(lambda: bob.joined_members(room_id) == {bob.user_id}, what="the virtual user to leave")


def test_wrong_or_missing_hs_token_is_refused_on_every_endpoint(bridge: BridgeProcess) -> None:
    endpoints = [
        ("PUT", "/_matrix/app/v1/transactions/t1", {"events": []}),
        ("GET", "/_matrix/app/v1/users/" + urllib.parse.quote(virtual_user("0555")), None),
        ("GET", "/_matrix/app/v1/thirdparty/protocol/m.protocol.pstn", None),
        ("GET", "/_matrix/app/v1/thirdparty/user/m.protocol.pstn?m.id.phone=0555", None),
        ("GET", "/_matrix/app/v1/thirdparty/user?userid=x", None),
        ("POST", "/_matrix/app/v1/ping", {}),
        ("PUT", "/transactions/t1", {"events": []}),
    ]
    for method, path, body in endpoints:
        with pytest.raises(HttpError) as wrong:
            http(method, bridge.url + path, body, token="not-the-token")
        assert (wrong.value.status, wrong.value.body["errcode"]) == (403, "M_FORBIDDEN"), path
        with pytest.raises(HttpError) as missing:
            http(method, bridge.url + path, body)
        assert missing.value.status == 401, path
    assert (
        http("POST", bridge.url + "/_matrix/app/v1/ping", {"transaction_id": "x"}, token=bridge.hs_token)
        == {}
    )


def test_replayed_transaction_is_processed_once_even_across_a_restart(
    alice: Client, bridge: BridgeProcess
) -> None:
    room_id, user_id = open_dm(alice, "0666")
    fake_event_id = f"$replayed-{uuid.uuid4().hex}"
    txn = {
        "events": [
            {
                "type": "m.room.message",
                "room_id": room_id,
                "sender": alice.user_id,
                "event_id": fake_event_id,
                "origin_server_ts": int(time.time() * 1000),
                "content": {"msgtype": "m.text", "body": "once"},
            }
        ]
    }
    txn_id = f"replay-{uuid.uuid4().hex}"
    url = bridge.url + f"/_matrix/app/v1/transactions/{txn_id}"

    def answered() -> int:
        return sum(1 for n in notices_from(alice, room_id, user_id) if reply_target(n) == fake_event_id)

    assert http("PUT", url, txn, token=bridge.hs_token) == {}
    wait_until(answered, what="the first processing")
    assert http("PUT", url, txn, token=bridge.hs_token) == {}
    bridge.stop()
    bridge.start()
    assert (
        http("PUT", bridge.url + f"/_matrix/app/v1/transactions/{txn_id}", txn, token=bridge.hs_token) == {}
    )
    send_and_wait_for_notice(alice, room_id, user_id, "barrier after replays")
    assert answered() == 1


def test_malformed_events_are_skipped_and_the_rest_of_the_transaction_is_handled(
    alice: Client, bridge: BridgeProcess
) -> None:
    room_id, user_id = open_dm(alice, "0777")
    good_id = f"$good-{uuid.uuid4().hex}"
    events: list[Any] = [
        "not an object",
        {"type": "m.room.member", "room_id": room_id},  # no sender, no state_key, no content
        {
            "type": "m.room.message",
            "room_id": room_id,
            "sender": alice.user_id,
            "event_id": "$x",
            "content": [],
        },
        {
            "type": "m.room.message",
            "room_id": room_id,
            "sender": alice.user_id,
            "event_id": good_id,
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "still here"},
        },
    ]
    assert (
        http(
            "PUT",
            bridge.url + f"/_matrix/app/v1/transactions/m-{uuid.uuid4().hex}",
            {"events": events},
            token=bridge.hs_token,
        )
        == {}
    )
    wait_until(
        lambda: any(reply_target(n) == good_id for n in notices_from(alice, room_id, user_id)),
        what="the good event",
    )
    with pytest.raises(HttpError) as not_json:
        http("PUT", bridge.url + "/_matrix/app/v1/transactions/bad", ["events"], token=bridge.hs_token)
    assert not_json.value.status == 400


def test_bridge_pings_the_homeserver_and_serves_metrics_without_leaking_tokens(
    alice: Client, bridge: BridgeProcess
) -> None:
    wait_until(lambda: "The homeserver reaches the bridge" in bridge.log_text(), what="the start-up ping")
    text = http_text(f"http://127.0.0.1:{bridge.metrics_port}/metrics")
    assert "telebridge_as_transactions_total" in text
    assert "telebridge_thirdparty_lookups_total" in text
    assert "telebridge_errors_total" in text
    log = bridge.log_text()
    assert bridge.hs_token not in log
    registration = bridge.registration.read_text()
    as_token = registration.split("as_token:")[1].split()[0]
    assert as_token not in log


def http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())
