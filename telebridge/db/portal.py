"""``portal`` and ``portal_party`` tables: which rooms bridge to which phone parties."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mautrix.util.async_db import Database


@dataclass
class Portal:
    """A portal row, cached in memory: every message looks its room up, and only this process writes."""

    db: ClassVar[Database]
    _cache: ClassVar[dict[str, Portal]] = {}

    room_id: str
    kind: str  # "dm" or "group"
    creator: str
    encrypted: bool
    created_at: int
    _parties: list[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def _from_row(cls, row: Any) -> Portal:
        return cls(
            room_id=row["room_id"],
            kind=row["kind"],
            creator=row["creator"],
            encrypted=bool(row["encrypted"]),
            created_at=row["created_at"],
        )

    @classmethod
    async def get(cls, room_id: str) -> Portal | None:
        cached = cls._cache.get(room_id)
        if cached is not None:
            return cached
        # The parties come in the same query: the first message in a room needs both, and one read
        # instead of two halves what a burst of first messages (after a restart) queues on the pool.
        rows = await cls.db.fetch(
            "SELECT p.room_id, p.kind, p.creator, p.encrypted, p.created_at, pp.puppet_mxid FROM portal p "
            "LEFT JOIN portal_party pp ON pp.room_id = p.room_id WHERE p.room_id=$1 "
            "ORDER BY pp.joined_at, pp.puppet_mxid",
            room_id,
        )
        return cls._remember(list(rows)) if rows else None

    @classmethod
    async def get_many(cls, room_ids: list[str]) -> None:
        """Read the portals among ``room_ids`` that are not in memory yet, with their parties, in one
        query per 500 rooms (rooms that are no portal stay unknown: :meth:`get` reads them again)."""
        missing = [room_id for room_id in room_ids if room_id not in cls._cache]
        for first in range(0, len(missing), 500):
            chunk = missing[first : first + 500]
            placeholders = ", ".join(f"${i}" for i in range(1, len(chunk) + 1))
            rows = await cls.db.fetch(
                "SELECT p.room_id, p.kind, p.creator, p.encrypted, p.created_at, pp.puppet_mxid FROM portal p "
                "LEFT JOIN portal_party pp ON pp.room_id = p.room_id "
                f"WHERE p.room_id IN ({placeholders}) ORDER BY p.room_id, pp.joined_at, pp.puppet_mxid",
                *chunk,
            )
            by_room: dict[str, list[Any]] = {}
            for row in rows:
                by_room.setdefault(row["room_id"], []).append(row)
            for room_rows in by_room.values():
                cls._remember(room_rows)

    @classmethod
    def _remember(cls, rows: list[Any]) -> Portal:
        """The portal of ``rows`` (one per party, from the joined query), cached unless it already is."""
        room_id = rows[0]["room_id"]
        cached = cls._cache.get(room_id)  # another task read it meanwhile: keep one object per room
        if cached is not None:
            return cached
        portal = cls._from_row(rows[0])
        portal._parties = [row["puppet_mxid"] for row in rows if row["puppet_mxid"] is not None]
        cls._cache[room_id] = portal
        return portal

    @classmethod
    def forget_all(cls) -> None:
        """Drop the cache (a new database was opened)."""
        cls._cache.clear()

    @classmethod
    async def create(cls, room_id: str, kind: str, creator: str, encrypted: bool = False) -> Portal:
        """Insert (or keep the existing row for) ``room_id``; a room is a portal at most once."""
        await cls.db.execute(
            "INSERT INTO portal (room_id, kind, creator, encrypted, created_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (room_id) DO NOTHING",
            room_id,
            kind,
            creator,
            encrypted,
            int(time.time() * 1000),
        )
        portal = await cls.get(room_id)
        assert portal is not None
        return portal

    @classmethod
    async def find_dm(cls, creator: str, puppet_mxid: str) -> Portal | None:
        """The DM between a Matrix user and a phone party, if one exists (newest first)."""
        row = await cls.db.fetchrow(
            "SELECT p.room_id, p.kind, p.creator, p.encrypted, p.created_at FROM portal p "
            "JOIN portal_party pp ON pp.room_id = p.room_id "
            "WHERE p.kind='dm' AND p.creator=$1 AND pp.puppet_mxid=$2 ORDER BY p.created_at DESC",
            creator,
            puppet_mxid,
        )
        return await cls.get(row["room_id"]) if row else None

    async def set_kind(self, kind: str) -> None:
        self.kind = kind
        await self.db.execute("UPDATE portal SET kind=$2 WHERE room_id=$1", self.room_id, kind)

    async def set_encrypted(self, encrypted: bool) -> None:
        self.encrypted = encrypted
        await self.db.execute("UPDATE portal SET encrypted=$2 WHERE room_id=$1", self.room_id, encrypted)

    async def parties(self) -> list[str]:
        if self._parties is None:
            rows = await self.db.fetch(
                "SELECT puppet_mxid FROM portal_party WHERE room_id=$1 ORDER BY joined_at, puppet_mxid",
                self.room_id,
            )
            self._parties = [row["puppet_mxid"] for row in rows]
        return list(self._parties)

    async def add_party(self, puppet_mxid: str) -> None:
        await self.db.execute(
            "INSERT INTO portal_party (room_id, puppet_mxid, joined_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id, puppet_mxid) DO NOTHING",
            self.room_id,
            puppet_mxid,
            int(time.time() * 1000),
        )
        self._parties = None

    async def remove_party(self, puppet_mxid: str) -> bool:
        """Stop relaying ``puppet_mxid`` here; returns whether any party is left."""
        await self.db.execute(
            "DELETE FROM portal_party WHERE room_id=$1 AND puppet_mxid=$2", self.room_id, puppet_mxid
        )
        self._parties = None
        return bool(await self.parties())

    async def delete(self) -> None:
        await self.db.execute("DELETE FROM portal WHERE room_id=$1", self.room_id)
        self._cache.pop(self.room_id, None)
