"""Matrix message content → the plain text a phone can show (SMS carries no markup, media or threads)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_REPLY_FALLBACK = re.compile(r"^(> .*\n?)+\n?", re.M)
_MEDIA = {
    "m.image": "an image",
    "m.file": "a file",
    "m.audio": "an audio message",
    "m.video": "a video",
    "m.sticker": "a sticker",
}


@dataclass(frozen=True)
class PlainText:
    text: str


@dataclass(frozen=True)
class NotRelayable:
    """Why a message cannot go out as SMS (shown to the sender as a notice)."""

    reason: str


def sms_text(content: Mapping[str, Any], sender_name: str | None = None) -> PlainText | NotRelayable:
    """Plain text for SMS from ``m.room.message`` content.

    - formatted bodies: the plain ``body`` (the spec's mandatory fallback) is used;
    - replies: the quoted fallback lines are dropped (the phone never saw the original anyway);
    - edits (``m.replace``): sent again as a correction, from ``m.new_content``;
    - emotes: ``* name does something``; media and files: not relayable (SMPP carries no MMS).
    """
    relates = content.get("m.relates_to")
    is_edit = isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace"
    if is_edit:
        new = content.get("m.new_content")
        if isinstance(new, Mapping):
            content = new
    msgtype = content.get("msgtype")
    body = content.get("body")
    if msgtype in _MEDIA:
        return NotRelayable(f"{_MEDIA[msgtype]} cannot be sent by SMS; only text reaches the phone.")
    if msgtype == "m.location":
        geo = content.get("geo_uri")
        return PlainText(f"Location: {geo}" if isinstance(geo, str) else "Location shared")
    if not isinstance(body, str) or not body.strip():
        return NotRelayable("this message has no text to send by SMS.")
    if isinstance(relates, Mapping) and "m.in_reply_to" in relates and not is_edit:
        body = _REPLY_FALLBACK.sub("", body, count=1)
    body = body.strip()
    if msgtype == "m.emote":
        body = f"* {sender_name or 'someone'} {body}"
    if is_edit:
        body = f"Correction: {body}"
    return PlainText(body)
