"""v4: credit — a balance per Matrix ID and an append-only ledger with idempotency keys."""

from mautrix.util.async_db import Connection, Scheme

from . import upgrade_table


@upgrade_table.register(description="Credit ledger")  # type: ignore[call-arg,arg-type]
async def upgrade_v4(conn: Connection, scheme: Scheme) -> None:
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if scheme == Scheme.SQLITE else "BIGSERIAL PRIMARY KEY"
    await conn.execute(
        """CREATE TABLE credit_account (
            user_id  TEXT PRIMARY KEY,
            balance  BIGINT NOT NULL DEFAULT 0,
            reserved BIGINT NOT NULL DEFAULT 0
        )"""
    )
    await conn.execute(
        f"""CREATE TABLE credit_entry (
            seq             {serial},
            user_id         TEXT NOT NULL,
            kind            TEXT NOT NULL CHECK (kind IN ('topup', 'adjust', 'reserve', 'charge', 'release')),
            amount          BIGINT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            reference       TEXT,
            description     TEXT,
            created_at      BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX credit_entry_user_idx ON credit_entry (user_id, seq)")
