"""v2: SMS — durable outbox (and its accepted parts), inbox, inbound parts awaiting the rest, receipts,
VMN allocations, opt-outs."""

from mautrix.util.async_db import Connection, Scheme

from . import upgrade_table


@upgrade_table.register(description="SMS outbox, inbox, receipts, VMN pool, opt-outs")  # type: ignore[call-arg,arg-type]
async def upgrade_v2(conn: Connection, scheme: Scheme) -> None:
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if scheme == Scheme.SQLITE else "BIGSERIAL PRIMARY KEY"
    await conn.execute(
        f"""CREATE TABLE sms_outbox (
            seq                 {serial},
            id                  TEXT NOT NULL UNIQUE,
            room_id             TEXT,
            event_id            TEXT,
            puppet_mxid         TEXT,
            source              TEXT NOT NULL,
            destination         TEXT NOT NULL,
            text                TEXT NOT NULL,
            registered_delivery BOOLEAN NOT NULL,
            state               TEXT NOT NULL,
            reference           INTEGER,
            segments            INTEGER NOT NULL DEFAULT 0,
            smsc                TEXT,
            error               TEXT,
            status              INTEGER,
            receipt             TEXT,
            created_at          BIGINT NOT NULL,
            updated_at          BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX sms_outbox_state_idx ON sms_outbox (state, seq)")
    await conn.execute("CREATE INDEX sms_outbox_event_idx ON sms_outbox (event_id)")
    await conn.execute(
        """CREATE TABLE sms_outbox_part (
            message_id      TEXT NOT NULL REFERENCES sms_outbox(id) ON DELETE CASCADE,
            idx             INTEGER NOT NULL,
            smsc            TEXT NOT NULL,
            smsc_message_id TEXT NOT NULL,
            PRIMARY KEY (message_id, idx)
        )"""
    )
    await conn.execute("CREATE INDEX sms_outbox_part_smsc_idx ON sms_outbox_part (smsc, smsc_message_id)")
    await conn.execute(
        f"""CREATE TABLE sms_inbox (
            seq         {serial},
            smsc        TEXT NOT NULL,
            source      TEXT NOT NULL,
            destination TEXT NOT NULL,
            text        TEXT NOT NULL,
            parts       INTEGER NOT NULL,
            missing     TEXT NOT NULL,
            state       TEXT NOT NULL,
            room_id     TEXT,
            event_id    TEXT,
            created_at  BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX sms_inbox_state_idx ON sms_inbox (state, seq)")
    await conn.execute(
        f"""CREATE TABLE sms_receipt (
            seq             {serial},
            smsc            TEXT NOT NULL,
            smsc_message_id TEXT NOT NULL,
            outcome         TEXT NOT NULL,
            reason          TEXT NOT NULL,
            handled         BOOLEAN NOT NULL DEFAULT false,
            created_at      BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX sms_receipt_handled_idx ON sms_receipt (handled, seq)")
    await conn.execute(
        """CREATE TABLE vmn_allocation (
            vmn        TEXT NOT NULL,
            phone      TEXT NOT NULL,
            side       TEXT NOT NULL,
            room_id    TEXT,
            puppet_mxid TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (vmn, phone),
            UNIQUE (side, phone)
        )"""
    )
    blob = "BLOB" if scheme == Scheme.SQLITE else "BYTEA"
    await conn.execute(
        f"""CREATE TABLE sms_inbound_part (
            smsc        TEXT NOT NULL,
            source      TEXT NOT NULL,
            destination TEXT NOT NULL,
            reference   INTEGER NOT NULL,
            total       INTEGER NOT NULL,
            seqnum      INTEGER NOT NULL,
            data_coding INTEGER NOT NULL,
            body        {blob} NOT NULL,
            created_at  BIGINT NOT NULL,
            PRIMARY KEY (source, destination, reference, total, seqnum)
        )"""
    )
    await conn.execute(
        """CREATE TABLE sms_optout (
            phone      TEXT PRIMARY KEY,
            created_at BIGINT NOT NULL
        )"""
    )
