"""``portal`` and ``portal_party`` tables: which rooms bridge to which phone parties."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from mautrix.util.async_db import Database


@dataclass
class Portal:
    db: ClassVar[Database]

    room_id: str
    kind: str  # "dm" or "group"
    creator: str
    encrypted: bool
    created_at: int

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
        row = await cls.db.fetchrow(
            "SELECT room_id, kind, creator, encrypted, created_at FROM portal WHERE room_id=$1", room_id
        )
        return cls._from_row(row) if row else None

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
        return cls._from_row(row) if row else None

    async def set_kind(self, kind: str) -> None:
        self.kind = kind
        await self.db.execute("UPDATE portal SET kind=$2 WHERE room_id=$1", self.room_id, kind)

    async def set_encrypted(self, encrypted: bool) -> None:
        self.encrypted = encrypted
        await self.db.execute("UPDATE portal SET encrypted=$2 WHERE room_id=$1", self.room_id, encrypted)

    async def parties(self) -> list[str]:
        rows = await self.db.fetch(
            "SELECT puppet_mxid FROM portal_party WHERE room_id=$1 ORDER BY joined_at, puppet_mxid",
            self.room_id,
        )
        return [row["puppet_mxid"] for row in rows]

    async def add_party(self, puppet_mxid: str) -> None:
        await self.db.execute(
            "INSERT INTO portal_party (room_id, puppet_mxid, joined_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id, puppet_mxid) DO NOTHING",
            self.room_id,
            puppet_mxid,
            int(time.time() * 1000),
        )

    async def remove_party(self, puppet_mxid: str) -> bool:
        """Stop relaying ``puppet_mxid`` here; returns whether any party is left."""
        await self.db.execute(
            "DELETE FROM portal_party WHERE room_id=$1 AND puppet_mxid=$2", self.room_id, puppet_mxid
        )
        return bool(await self.parties())

    async def delete(self) -> None:
        await self.db.execute("DELETE FROM portal WHERE room_id=$1", self.room_id)
