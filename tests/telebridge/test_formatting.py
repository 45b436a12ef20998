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


def test_sip_failures_map_to_matrix_hangup_reasons_and_notices() -> None:
    from telebridge.calls import matrix_reason_for_sip, sip_status_for_matrix, trunk_codec

    assert matrix_reason_for_sip(486) == ("user_busy", None)
    assert matrix_reason_for_sip(603) == ("user_busy", None)
    assert matrix_reason_for_sip(408)[0] == matrix_reason_for_sip(480)[0] == "invite_timeout"
    for status in (403, 404, 484, 503):
        reason, notice = matrix_reason_for_sip(status)
        assert reason == "unknown_error" and notice and str(status) in notice
    assert sip_status_for_matrix("user_busy", rejected=False) == 486
    assert sip_status_for_matrix(None, rejected=True) == 603
    assert (
        trunk_codec("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\n")
        == "PCMA"
    )
    assert trunk_codec("not sdp") is None


def test_offer_direction_reads_hold() -> None:
    from telebridge.calls import offer_direction

    base = (
        "v=0\r\no=p 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
    )
    assert offer_direction(base + "a=sendonly\r\n") == "sendonly"
    assert offer_direction(base) == "sendrecv"
    assert offer_direction(base.replace("5000", "0")) == "inactive"
    assert offer_direction("garbage") == "sendrecv"
