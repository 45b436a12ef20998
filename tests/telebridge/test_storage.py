"""The storage layer on both backends: same queries, same answers."""

from __future__ import annotations

from telebridge import db


async def open_db(url: str) -> db.Database:  # type: ignore[name-defined]
    database = db.create_database(url)
    db.init(database)
    await database.start()
    return database


async def test_schema_upgrades_and_portal_lifecycle(database_url: str) -> None:
    database = await open_db(database_url)
    try:
        puppet = await db.Puppet.get_or_create("@_sip_1%40gw:hs", "1", "gw")
        assert not puppet.registered
        await puppet.mark_registered("1")
        assert (await db.Puppet.get("@_sip_1%40gw:hs")).registered  # type: ignore[union-attr]
        await db.Puppet.get_or_create("@_sip_2%40gw:hs", "2", "gw")

        portal = await db.Portal.create("!room:hs", "dm", "@alice:hs")
        assert await db.Portal.create("!room:hs", "group", "@bob:hs") == portal, "a room is a portal once"
        await portal.add_party("@_sip_1%40gw:hs")
        await portal.add_party("@_sip_1%40gw:hs")
        assert await portal.parties() == ["@_sip_1%40gw:hs"]
        assert (await db.Portal.find_dm("@alice:hs", "@_sip_1%40gw:hs")) == portal
        await portal.add_party("@_sip_2%40gw:hs")
        assert await portal.remove_party("@_sip_1%40gw:hs") is True
        assert await portal.remove_party("@_sip_2%40gw:hs") is False
        await portal.delete()
        assert await db.Portal.get("!room:hs") is None
    finally:
        await database.stop()


async def test_a_transactions_portals_are_read_together_with_their_parties(database_url: str) -> None:
    database = await open_db(database_url)
    try:
        for i in range(3):
            portal = await db.Portal.create(f"!r{i}:hs", "dm", "@alice:hs")
            for j in range(i):
                await db.Puppet.get_or_create(f"@_sip_{i}{j}:hs", f"{i}{j}", "gw")
                await portal.add_party(f"@_sip_{i}{j}:hs")
        db.Portal.forget_all()  # a restart
        await db.Portal.get_many(["!r0:hs", "!r1:hs", "!r2:hs", "!not-a-portal:hs"])
        await database.execute("DELETE FROM portal_party")  # what follows comes from memory
        parties = [await p.parties() for p in [await db.Portal.get(f"!r{i}:hs") for i in range(3)] if p]
        assert parties == [[], ["@_sip_10:hs"], ["@_sip_20:hs", "@_sip_21:hs"]]
        assert await db.Portal.get("!not-a-portal:hs") is None
    finally:
        await database.stop()


async def test_transaction_log_survives_a_restart(database_url: str) -> None:
    database = await open_db(database_url)
    try:
        assert not await db.TransactionLog.seen("t1")
        await db.TransactionLog.record("t1")
        await db.TransactionLog.record("t1")
    finally:
        await database.stop()
    database = await open_db(database_url)
    try:
        assert await db.TransactionLog.seen("t1")
        await db.TransactionLog.prune(older_than_ms=-1000)
        assert not await db.TransactionLog.seen("t1")
    finally:
        await database.stop()
