"""Group commit: many small writes that must each be durable before their caller goes on, committed
together in one database transaction (one fsync) instead of one each.

Callers ``await commit(statements)``; when it returns, their statements are committed. A writer task
takes whatever has queued up while the previous commit ran, so under load commits grow and their count
falls, and when idle a single write commits at once (no added latency waiting for company). If a batch
fails, its units are retried one by one so that one bad statement fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg
from mautrix.util.async_db import Database

log = logging.getLogger("telebridge.db")

Statement = tuple[str, Sequence[Any]]

#: What a commit raises when a row it inserts exists already, on either backend.
UNIQUE_VIOLATIONS = (sqlite3.IntegrityError, asyncpg.UniqueViolationError)


class GroupCommit:
    def __init__(self, db: Database, max_batch: int = 512) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[tuple[Sequence[Statement], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` atomically, together with whatever else is waiting; durable on return."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((statements, future))
        self._wakeup.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever())
        await future

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None

    async def _write_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            # One connection for as long as there is work: on PostgreSQL each connection prepares each
            # statement once, and a writer that moved between pool connections paid that on each of them
            # (commits twice as long for the first few hundred texts after a start). Given back when the
            # queue is empty (so the pool can close) or after a failed commit (the connection may be bad).
            conn: Any
            async with self.db.acquire() as conn:
                while self._queue:
                    batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                    if not await self._write(conn, batch):
                        break

    async def _write(self, conn: Any, batch: list[tuple[Sequence[Statement], asyncio.Future[None]]]) -> bool:
        """Commit ``batch``; False if its combined commit failed."""
        try:
            await self._run(conn, [s for unit, _ in batch for s in unit])
        except Exception as e:
            if len(batch) == 1:
                self._settle(batch[0][1], e)
                return False
            log.warning("A group commit of %d units failed; retrying them one by one", len(batch))
            for unit, future in batch:
                try:
                    await self._run(conn, unit)
                except Exception as one:
                    self._settle(future, one)
                else:
                    self._settle(future)
            return False
        for _, future in batch:
            self._settle(future)
        return True

    async def _run(self, conn: Any, statements: Sequence[Statement]) -> None:
        """One transaction; statements with the same text go as one ``executemany`` (one thread hop for
        SQLite, one round trip for PostgreSQL), in the order each text first appears. Reordering across
        units is safe: a caller awaits each commit before its next write, so one batch never holds two
        writes to the same row that depend on each other's order. A unit that gathers many callers'
        writes (an appservice transaction's, ``txn.PendingWrites``) must keep such pairs in the order of
        their texts' first appearance: a credit hold's ``INSERT … credit_account`` always comes before its
        ``UPDATE`` in every unit, so it runs first; a new VMN pair's row takes a later room change itself
        (``VmnAllocations.remember_room``) rather than an ``UPDATE`` that could run before the insert."""
        grouped: dict[str, list[Sequence[Any]]] = {}
        for query, args in statements:
            grouped.setdefault(query, []).append(args)
        async with conn.transaction():
            for query, arg_lists in grouped.items():
                if len(arg_lists) == 1:
                    await conn.execute(query, *arg_lists[0])
                else:
                    await conn.executemany(query, arg_lists)

    @staticmethod
    def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
        if future.done():  # the caller was cancelled; its statements committed (or not) all the same
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)
