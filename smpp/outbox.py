"""The durable outbox the bridge keeps in its database, as seen by the SMPP gateway.

A message is written to the outbox *before* anything is submitted, and every status
change is stored, so after a crash or a reconnect the gateway resumes from
`load_pending()` and nothing is lost. Parts already accepted by an SMSC are recorded
one by one with the concatenation reference, so a resumed message resends only the
missing parts with the same UDH reference and the handset still joins them. A part
whose submit_sm reached the SMSC but whose response was lost is sent again: that is
the one duplicate at-least-once allows, and the gateway counts it.

`Outbox` is the typing.Protocol the bridge implements; `MemoryOutbox` is for tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Protocol


class OutboxState(enum.Enum):
    PENDING = "pending"  # stored, nothing accepted yet (a single PDU stays so until SUBMITTED)
    SUBMITTING = "submitting"  # several parts: reference fixed, some parts may be accepted
    SUBMITTED = "submitted"  # every part accepted by an SMSC (receipts come later)
    FAILED = "failed"  # refused for good; the reason says why


@dataclass(slots=True)
class OutboundMessage:
    """One text to one phone number. *id* is the bridge's (e.g. its outbox row or event id)."""

    id: str
    source: str
    destination: str
    text: str
    registered_delivery: bool = True
    state: OutboxState = OutboxState.PENDING
    reference: int | None = None
    segments: int = 0
    parts: dict[int, str] = field(default_factory=dict)  # part index -> SMSC message_id
    smsc: str | None = None  # SMSC that accepted the first part
    error: str | None = None

    @property
    def conversation(self) -> tuple[str, str]:
        """Order is kept per (source, destination) pair."""
        return (self.source, self.destination)


class Outbox(Protocol):
    """What the gateway needs from the bridge's database. Every method is durable on return."""

    async def enqueue(self, message: OutboundMessage) -> None: ...

    async def load_pending(self) -> list[OutboundMessage]:
        """PENDING and SUBMITTING messages, in the order they were enqueued."""
        ...

    async def mark_submitting(self, message_id: str, reference: int, segments: int) -> None: ...

    async def mark_part_submitted(
        self, message_id: str, index: int, smsc: str, smsc_message_id: str
    ) -> None: ...

    async def mark_submitted(self, message_id: str) -> None: ...

    async def mark_failed(self, message_id: str, reason: str, status: int | None) -> None: ...


class MemoryOutbox:
    """In-memory `Outbox` for tests and benchmarks. `copy()` simulates a restart from disk."""

    def __init__(self) -> None:
        self.messages: dict[str, OutboundMessage] = {}
        self.history: list[tuple[str, str]] = []  # (message id, transition) in order

    async def enqueue(self, message: OutboundMessage) -> None:
        if message.id in self.messages:
            raise KeyError(f"duplicate outbox id {message.id}")
        self.messages[message.id] = replace(message, parts=dict(message.parts))
        self.history.append((message.id, "enqueued"))

    async def load_pending(self) -> list[OutboundMessage]:
        return [
            replace(m, parts=dict(m.parts))
            for m in self.messages.values()
            if m.state in (OutboxState.PENDING, OutboxState.SUBMITTING)
        ]

    async def mark_submitting(self, message_id: str, reference: int, segments: int) -> None:
        m = self.messages[message_id]
        m.state, m.reference, m.segments = OutboxState.SUBMITTING, reference, segments
        self.history.append((message_id, "submitting"))

    async def mark_part_submitted(self, message_id: str, index: int, smsc: str, smsc_message_id: str) -> None:
        m = self.messages[message_id]
        m.parts[index] = smsc_message_id
        if m.smsc is None:
            m.smsc = smsc
        self.history.append((message_id, f"part {index}"))

    async def mark_submitted(self, message_id: str) -> None:
        self.messages[message_id].state = OutboxState.SUBMITTED
        self.history.append((message_id, "submitted"))

    async def mark_failed(self, message_id: str, reason: str, status: int | None) -> None:
        m = self.messages[message_id]
        m.state, m.error = OutboxState.FAILED, reason
        self.history.append((message_id, "failed"))

    def copy(self) -> MemoryOutbox:
        other = MemoryOutbox()
        other.messages = {k: replace(v, parts=dict(v.parts)) for k, v in self.messages.items()}
        other.history = list(self.history)
        return other
