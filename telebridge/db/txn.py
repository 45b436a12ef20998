"""``as_transaction`` table: transactions already processed, so a homeserver retry is a no-op (AS API
"Pushing events": the homeserver retries the same txnId until it gets 200)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import ClassVar

from mautrix.util.async_db import Database

from .group_commit import GroupCommit

#: The homeserver retries one transaction until it succeeds before sending the next, so only the most
#: recent IDs can come back (also after a restart); older ones stay in the table for the record.
RECENT = 4096


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
    async def record(cls, txn_id: str) -> None:
        recent = await cls._load()
        await cls.writes.commit(
            [
                (
                    "INSERT INTO as_transaction (txn_id, processed_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING",
                    (txn_id, int(time.time() * 1000)),
                )
            ]
        )
        recent[txn_id] = None
        while len(recent) > RECENT:
            recent.popitem(last=False)

    @classmethod
    async def prune(cls, older_than_ms: int) -> None:
        """Forget transactions the homeserver can no longer retry (it gives up long before a week)."""
        cutoff = int(time.time() * 1000) - older_than_ms
        await cls.db.execute("DELETE FROM as_transaction WHERE processed_at < $1", cutoff)
        cls._recent = None
