from __future__ import annotations

from telebridge.formatting import NotRelayable, PlainText, sms_text


def test_formatted_messages_use_the_plain_body() -> None:
    content = {
        "msgtype": "m.text",
        "body": "hello *world*",
        "format": "org.matrix.custom.html",
        "formatted_body": "hello <b>world</b>",
    }
    assert sms_text(content) == PlainText("hello *world*")


def test_replies_lose_their_quoted_fallback() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> <@bob:hs> what time?\n> second line\n\nseven",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
    }
    assert sms_text(content) == PlainText("seven")


def test_edits_are_sent_as_a_correction() -> None:
    content = {
        "msgtype": "m.text",
        "body": "* seven thirty",
        "m.new_content": {"msgtype": "m.text", "body": "seven thirty"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
    }
    assert sms_text(content) == PlainText("Correction: seven thirty")


def test_emotes_name_the_sender_and_media_is_refused() -> None:
    assert sms_text({"msgtype": "m.emote", "body": "waves"}, "Alice") == PlainText("* Alice waves")
    refused = sms_text({"msgtype": "m.image", "body": "cat.jpg", "url": "mxc://x/y"})
    assert isinstance(refused, NotRelayable) and "image" in refused.reason
    assert isinstance(sms_text({"msgtype": "m.text", "body": "   "}), NotRelayable)
