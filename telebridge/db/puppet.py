"""``puppet`` table: one row per virtual user the bridge has created on the homeserver."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from mautrix.util.async_db import Database


@dataclass
class Puppet:
    db: ClassVar[Database]

    mxid: str
    number: str
    gateway_host: str
    displayname: str | None
    registered: bool
    created_at: int

    @classmethod
    def _from_row(cls, row: Any) -> Puppet:
        return cls(
            mxid=row["mxid"],
            number=row["number"],
            gateway_host=row["gateway_host"],
            displayname=row["displayname"],
            registered=bool(row["registered"]),
            created_at=row["created_at"],
        )

    @classmethod
    async def get(cls, mxid: str) -> Puppet | None:
        row = await cls.db.fetchrow(
            "SELECT mxid, number, gateway_host, displayname, registered, created_at FROM puppet WHERE mxid=$1",
            mxid,
        )
        return cls._from_row(row) if row else None

    @classmethod
    async def get_or_create(cls, mxid: str, number: str, gateway_host: str) -> Puppet:
        await cls.db.execute(
            "INSERT INTO puppet (mxid, number, gateway_host, registered, created_at) "
            "VALUES ($1, $2, $3, false, $4) ON CONFLICT (mxid) DO NOTHING",
            mxid,
            number,
            gateway_host,
            int(time.time() * 1000),
        )
        puppet = await cls.get(mxid)
        assert puppet is not None
        return puppet

    async def mark_registered(self, displayname: str) -> None:
        self.registered = True
        self.displayname = displayname
        await self.db.execute(
            "UPDATE puppet SET registered=true, displayname=$2 WHERE mxid=$1", self.mxid, displayname
        )
