"""v5: the SIP dialog of an answered call, so a restart after a crash can send the trunk its BYE."""

from mautrix.util.async_db import Connection, Scheme

from . import upgrade_table


@upgrade_table.register(description="SIP dialog per call")  # type: ignore[call-arg,arg-type]
async def upgrade_v5(conn: Connection, scheme: Scheme) -> None:
    await conn.execute("ALTER TABLE call_record ADD COLUMN sip_dialog TEXT")
