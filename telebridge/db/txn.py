"""``as_transaction`` table: transactions already processed, so a homeserver retry is a no-op (AS API
"Pushing events": the homeserver retries the same txnId until it gets 200).

A transaction's record and the durable writes its events leave (SMS outbox rows) are one commit: one
fsync per transaction instead of one for the events and another for the record, and a transaction whose
record is stored has every such write stored with it, so a retry that finds it seen loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

from mautrix.util.async_db import Database

from .group_commit import UNIQUE_VIOLATIONS, GroupCommit, Statement

log = logging.getLogger("telebridge.db")

#: The homeserver retries one transaction until it succeeds before sending the next, so only the most
#: recent IDs can come back (also after a restart); older ones stay in the table for the record.
RECENT = 4096

_RECORD = "INSERT INTO as_transaction (txn_id, processed_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING"


def _nothing() -> None:
    pass


@dataclass(frozen=True, slots=True)
class _Write:
    statements: Sequence[Statement]
    stored: Callable[[], None]
    dropped: Callable[[], None]


class PendingWrites:
    """Writes the events of the transaction being processed leave for its commit, each with what to do
    once it is stored (queue the SMS for sending, say) or once it is known it will not be (take back what
    was counted in memory ahead of the commit). Handlers find it with :meth:`TransactionLog.pending`, so
    the event sink's signature stays the one mautrix defines."""

    def __init__(self) -> None:
        self.items: list[_Write] = []
        self.open = True

    def add(
        self,
        statements: Sequence[Statement],
        stored: Callable[[], None] = _nothing,
        dropped: Callable[[], None] = _nothing,
    ) -> None:
        """Commit ``statements`` with the transaction's record, then call ``stored``. If the commit fails,
        ``dropped`` is called instead and the homeserver retries the whole transaction; if the statements
        insert a row that exists already (stored by an earlier try), ``dropped`` too."""
        if not self.open:
            raise RuntimeError("the transaction's writes were already committed")
        self.items.append(_Write(statements, stored, dropped))


_pending: ContextVar[PendingWrites | None] = ContextVar("telebridge_pending_writes", default=None)


class TransactionLog:
    db: ClassVar[Database]
    writes: ClassVar[GroupCommit]
    _recent: ClassVar[OrderedDict[str, None] | None] = None

    @classmethod
    def forget_all(cls) -> None:
        cls._recent = None

    @classmethod
    async def _load(cls) -> OrderedDict[str, None]:
        if cls._recent is None:
            rows = await cls.db.fetch(
                "SELECT txn_id FROM as_transaction ORDER BY processed_at DESC LIMIT $1", RECENT
            )
            cls._recent = OrderedDict((row["txn_id"], None) for row in reversed(rows))
        return cls._recent

    @classmethod
    async def seen(cls, txn_id: str) -> bool:
        return txn_id in await cls._load()

    @classmethod
    def pending(cls) -> PendingWrites | None:
        """The writes of the transaction whose events are being handled here, or None outside one (a text
        relayed on from an inbound SMS, say: that caller commits its own writes)."""
        pending = _pending.get()
        return pending if pending is not None and pending.open else None

    @classmethod
    async def process(cls, txn_id: str, handle: Callable[[], Awaitable[None]]) -> None:
        """Run ``handle`` (the transaction's events), then store the record together with every write the
        handlers left in :meth:`pending`; durable on return. Raises when that cannot be stored, so the
        homeserver gets an error and retries."""
        pending = PendingWrites()
        token = _pending.set(pending)
        try:
            await handle()
        finally:
            pending.open = False
            _pending.reset(token)
        record: Statement = (_RECORD, (txn_id, int(time.time() * 1000)))
        try:
            await cls.writes.commit([s for write in pending.items for s in write.statements] + [record])
        except UNIQUE_VIOLATIONS:
            # A row one of these events writes exists already: the homeserver sent the event before, or
            # an older bridge stored it and crashed before the record. Store the others one by one.
            log.warning("Transaction %s repeats writes already stored; storing its events one by one", txn_id)
            await cls._one_by_one(pending.items)
            await cls.writes.commit([record])
        except BaseException:
            for write in pending.items:
                write.dropped()
            raise
        else:
            for write in pending.items:
                write.stored()
        await cls._remember(txn_id)

    @classmethod
    async def _one_by_one(cls, writes: list[_Write]) -> None:
        for i, write in enumerate(writes):
            try:
                await cls.writes.commit(write.statements)
            except UNIQUE_VIOLATIONS:
                write.dropped()  # stored before, and queued (or sent) since
                continue
            except BaseException:
                for rest in writes[i:]:
                    rest.dropped()
                raise
            write.stored()

    @classmethod
    async def record(cls, txn_id: str) -> None:
        """Store the record alone (a transaction that left no writes)."""
        await cls.writes.commit([(_RECORD, (txn_id, int(time.time() * 1000)))])
        await cls._remember(txn_id)

    @classmethod
    async def _remember(cls, txn_id: str) -> None:
        recent = await cls._load()
        recent[txn_id] = None
        while len(recent) > RECENT:
            recent.popitem(last=False)

    @classmethod
    async def prune(cls, older_than_ms: int) -> None:
        """Forget transactions the homeserver can no longer retry (it gives up long before a week)."""
        cutoff = int(time.time() * 1000) - older_than_ms
        await cls.db.execute("DELETE FROM as_transaction WHERE processed_at < $1", cutoff)
        cls._recent = None
