"""The appservice's fast path for plain text messages builds exactly what mautrix's deserialiser builds."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from mautrix.types import Event

from telebridge.appservice import _event_type_class, plain_text_message

ids = st.text(min_size=1, max_size=20)
plain_messages = st.fixed_dictionaries(
    {
        "type": st.just("m.room.message"),
        "room_id": ids.map(lambda s: f"!{s}:hs"),
        "sender": ids.map(lambda s: f"@{s}:hs"),
        "event_id": ids.map(lambda s: f"${s}"),
        "origin_server_ts": st.integers(min_value=0, max_value=2**53),
        "content": st.fixed_dictionaries(
            {"msgtype": st.sampled_from(["m.text", "m.notice", "m.emote"]), "body": st.text()},
            optional={"m.mentions": st.just({}), "org.example.custom": st.integers()},
        ),
    },
    optional={
        "unsigned": st.fixed_dictionaries(
            {}, optional={"age": st.integers(min_value=0), "transaction_id": st.text()}
        ),
        "user_id": ids.map(lambda s: f"@{s}:hs"),  # legacy keys some homeservers still send
        "age": st.integers(min_value=0),
    },
)


def generic(raw: dict[str, Any]) -> Any:
    event = Event.deserialize(copy.deepcopy(raw))
    _event_type_class(raw, event)
    return event


@given(plain_messages)
def test_a_plain_text_message_is_built_as_mautrix_would(raw: dict[str, Any]) -> None:
    fast = plain_text_message(copy.deepcopy(raw))
    slow = generic(raw)
    assert fast is not None
    assert fast == slow
    assert fast.type.t_class == slow.type.t_class
    assert fast.serialize() == slow.serialize()
    assert fast.content.serialize() == slow.content.serialize()
    assert getattr(fast, "unrecognized_", {}) == getattr(slow, "unrecognized_", {})


BASE: dict[str, Any] = {
    "type": "m.room.message",
    "room_id": "!r:hs",
    "sender": "@a:hs",
    "event_id": "$e",
    "origin_server_ts": 1,
    "content": {"msgtype": "m.text", "body": "hi"},
}


def test_anything_but_a_plain_text_message_takes_the_generic_path() -> None:
    def variant(**changes: Any) -> dict[str, Any]:
        raw = copy.deepcopy(BASE)
        raw.update(changes)
        return raw

    for raw in (
        variant(
            content={
                "msgtype": "m.text",
                "body": "*hi*",
                "format": "org.matrix.custom.html",
                "formatted_body": "<em>hi</em>",
            }
        ),
        variant(
            content={
                "msgtype": "m.text",
                "body": "> quote\n\nhi",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
            }
        ),
        variant(content={"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/cat"}),
        variant(content={"body": "no msgtype"}),
        variant(type="m.room.member", state_key="@a:hs", content={"membership": "join"}),
        variant(state_key=""),
        variant(origin_server_ts=1.5),
        variant(unsigned={"age": 1, "prev_content": {}}),
        variant(sender=None),
    ):
        assert plain_text_message(raw) is None, raw
