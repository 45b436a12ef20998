"""v3: call records — parties, times, outcome, codec and quality per call (billing rates them next)."""

from mautrix.util.async_db import Connection, Scheme

from . import upgrade_table


@upgrade_table.register(description="Call records")  # type: ignore[call-arg,arg-type]
async def upgrade_v3(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE call_record (
            call_id      TEXT PRIMARY KEY,
            direction    TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
            matrix_user  TEXT NOT NULL,
            room_id      TEXT NOT NULL,
            number       TEXT NOT NULL,
            sip_call_id  TEXT,
            started_at   BIGINT NOT NULL,
            answered_at  BIGINT,
            ended_at     BIGINT,
            outcome      TEXT,
            reason       TEXT,
            sip_status   INTEGER,
            codec        TEXT,
            stats        TEXT
        )"""
    )
    await conn.execute("CREATE INDEX call_record_user_idx ON call_record (matrix_user, started_at)")
