"""``as_transaction`` table: transactions already processed, so a homeserver retry is a no-op (AS API
"Pushing events": the homeserver retries the same txnId until it gets 200)."""

from __future__ import annotations

import time
from typing import ClassVar

from mautrix.util.async_db import Database


class TransactionLog:
    db: ClassVar[Database]

    @classmethod
    async def seen(cls, txn_id: str) -> bool:
        return await cls.db.fetchval("SELECT 1 FROM as_transaction WHERE txn_id=$1", txn_id) is not None

    @classmethod
    async def record(cls, txn_id: str) -> None:
        await cls.db.execute(
            "INSERT INTO as_transaction (txn_id, processed_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING",
            txn_id,
            int(time.time() * 1000),
        )

    @classmethod
    async def prune(cls, older_than_ms: int) -> None:
        """Forget transactions the homeserver can no longer retry (it gives up long before a week)."""
        cutoff = int(time.time() * 1000) - older_than_ms
        await cls.db.execute("DELETE FROM as_transaction WHERE processed_at < $1", cutoff)
