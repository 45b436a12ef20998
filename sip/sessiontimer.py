"""Session timers (RFC 4028): the rules, as pure functions; the core arms the timers.

A session with a timer is refreshed by re-INVITE or UPDATE from the *refresher* every half interval
(§10); the other side ends it with BYE if no refresh arrives ``SE - min(32, SE/3)`` seconds after the
last one (§10). Negotiation (§7, §9): the UAC offers ``Session-Expires`` and ``Supported: timer``; the
UAS answers with ``Session-Expires: SE;refresher=uac|uas`` (``Require: timer`` when the UAC is the
refresher), or 422 with ``Min-SE`` when the interval is below its minimum.
"""

from __future__ import annotations

from sip.errors import SipParseError
from sip.headers import parse_int, parse_params
from sip.message import Message

#: RFC 4028 §4: the absolute minimum interval.
MIN_SE_FLOOR = 90


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``Session-Expires = delta-seconds *(SEMI se-params)``; returns (seconds, refresher or None)."""
    delta, _, rest = value.partition(";")
    seconds = parse_int(delta, "Session-Expires")
    params = parse_params(";" + rest, 0, "Session-Expires") if rest.strip() else {}
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise SipParseError("invalid refresher")
    return seconds, refresher


def session_expires_of(message: Message) -> tuple[int, str | None] | None:
    value = message.headers.get("Session-Expires")
    return parse_session_expires(value) if value is not None else None


def supports_timer(message: Message) -> bool:
    return any(v.lower() == "timer" for v in message.headers.get_all("Supported")) or any(
        v.lower() == "timer" for v in message.headers.get_all("Require")
    )


def refresh_after(interval: int) -> float:
    """§10: the refresher sends its refresh half-way through the interval."""
    return interval / 2


def expire_after(interval: int) -> float:
    """§10: the other side gives up at SE - min(32, SE/3)."""
    return interval - min(32.0, interval / 3)
