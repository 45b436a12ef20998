"""v1: virtual users, portals and the parties in them, processed appservice transactions."""

from mautrix.util.async_db import Connection, Scheme

from . import upgrade_table


@upgrade_table.register(description="Initial schema")  # type: ignore[call-arg,arg-type]
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE puppet (
            mxid         TEXT PRIMARY KEY,
            number       TEXT NOT NULL,
            gateway_host TEXT NOT NULL,
            displayname  TEXT,
            registered   BOOLEAN NOT NULL DEFAULT false,
            created_at   BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE portal (
            room_id    TEXT PRIMARY KEY,
            kind       TEXT NOT NULL CHECK (kind IN ('dm', 'group')),
            creator    TEXT NOT NULL,
            encrypted  BOOLEAN NOT NULL DEFAULT false,
            created_at BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE portal_party (
            room_id     TEXT NOT NULL REFERENCES portal(room_id) ON DELETE CASCADE,
            puppet_mxid TEXT NOT NULL REFERENCES puppet(mxid),
            joined_at   BIGINT NOT NULL,
            PRIMARY KEY (room_id, puppet_mxid)
        )"""
    )
    await conn.execute("CREATE INDEX portal_party_puppet_idx ON portal_party (puppet_mxid)")
    await conn.execute(
        """CREATE TABLE as_transaction (
            txn_id       TEXT PRIMARY KEY,
            processed_at BIGINT NOT NULL
        )"""
    )
