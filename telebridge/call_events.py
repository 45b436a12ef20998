"""The Matrix legacy VoIP event types (spec: "Voice over IP"), apart from the call machinery so the bridge
can route them without loading the SIP and media stacks."""

from __future__ import annotations

from mautrix.types import EventType

CALL_INVITE = EventType.find("m.call.invite", EventType.Class.MESSAGE)
CALL_CANDIDATES = EventType.find("m.call.candidates", EventType.Class.MESSAGE)
CALL_ANSWER = EventType.find("m.call.answer", EventType.Class.MESSAGE)
CALL_HANGUP = EventType.find("m.call.hangup", EventType.Class.MESSAGE)
CALL_REJECT = EventType.find("m.call.reject", EventType.Class.MESSAGE)
CALL_SELECT_ANSWER = EventType.find("m.call.select_answer", EventType.Class.MESSAGE)
CALL_NEGOTIATE = EventType.find("m.call.negotiate", EventType.Class.MESSAGE)
CALL_EVENT_TYPES = frozenset(
    {CALL_INVITE, CALL_CANDIDATES, CALL_ANSWER, CALL_HANGUP, CALL_REJECT, CALL_SELECT_ANSWER, CALL_NEGOTIATE}
)
