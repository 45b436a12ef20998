"""SMS tables on both backends: the outbox contract the gateway relies on, VMN allocation, opt-outs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smpp.outbox import OutboundMessage, OutboxState
from telebridge import db
from telebridge.db.sms import OutboxOrigin, PoolExhausted


@pytest.fixture
async def database(database_url: str):  # type: ignore[no-untyped-def]
    database = db.create_database(database_url)
    db.init(database)
    await database.start()
    try:
        yield database
    finally:
        await database.stop()


async def test_outbox_resumes_pending_messages_in_order_with_their_accepted_parts(database: object) -> None:
    outbox = db.SmsOutbox()
    for i in range(3):
        outbox.attach_origin(f"m{i}", OutboxOrigin("!room:hs", f"$e{i}", "@_sip_1:hs"))
        await outbox.enqueue(OutboundMessage(id=f"m{i}", source="+1555", destination="+1666", text=f"t{i}"))
    await outbox.mark_submitting("m0", reference=7, segments=2)
    await outbox.mark_part_submitted("m0", 1, "smsc-a", "id-1")
    await outbox.mark_submitted("m1")
    pending = await db.SmsOutbox().load_pending()
    assert [m.id for m in pending] == ["m0", "m2"]
    assert pending[0].state is OutboxState.SUBMITTING
    assert (pending[0].reference, pending[0].segments, pending[0].parts, pending[0].smsc) == (
        7,
        2,
        {1: "id-1"},
        "smsc-a",
    )
    found = await outbox.find_by_part("smsc-a", "id-1")
    assert found is not None and found.origin == OutboxOrigin("!room:hs", "$e0", "@_sip_1:hs")
    await outbox.mark_failed("m2", "rejected by the carrier", 0x45)
    failed = await outbox.get("m2")
    assert failed is not None and (failed.state, failed.error) == ("failed", "rejected by the carrier")


async def test_vmn_allocation_is_unique_per_phone_and_sticky(database: object) -> None:
    pool = ["+447700900001", "+447700900002"]
    a = await db.VmnAllocations.allocate("@alice:hs", "+1666", pool)
    b = await db.VmnAllocations.allocate("!group:hs", "+1666", pool)
    assert a != b
    assert await db.VmnAllocations.allocate("@alice:hs", "+1666", pool) == a
    assert await db.VmnAllocations.allocate("@alice:hs", "+1777", pool) == pool[0], (
        "other phones reuse numbers"
    )
    with pytest.raises(PoolExhausted):
        await db.VmnAllocations.allocate("@carol:hs", "+1666", pool)
    assert await db.VmnAllocations.side_for(b, "+1666") == "!group:hs"


async def test_concurrent_allocations_for_one_phone_never_share_a_number(database: object) -> None:
    pool = [f"+4477009000{i:02d}" for i in range(10)]
    sides = [f"@user{i}:hs" for i in range(10)]
    got = await asyncio.gather(*(db.VmnAllocations.allocate(side, "+1888", pool) for side in sides))
    assert sorted(got) == sorted(pool)


async def test_a_new_pair_is_stored_with_its_room_and_found_after_a_restart(database: object) -> None:
    pool = ["+447700900001"]
    vmn = await db.VmnAllocations.allocate("@alice:hs", "+1999", pool, "!dm:hs", "@_sip_1999:hs")
    db.VmnAllocations.forget_all()  # a restart: nothing in memory
    assert await db.VmnAllocations.conversation(vmn, "+1999") == ("@alice:hs", "!dm:hs", "@_sip_1999:hs")
    assert await db.VmnAllocations.for_side("@alice:hs", "+1999") == vmn
    with pytest.raises(PoolExhausted):
        await db.VmnAllocations.allocate("@bob:hs", "+1999", pool)


async def test_a_pair_another_writer_made_is_respected(database: Any) -> None:
    """The pairs are kept in memory once read; a row written behind the cache's back still wins."""
    pool = ["+447700900001", "+447700900002"]
    assert await db.VmnAllocations.for_side("@alice:hs", "+1444") is None  # the table is now in memory
    await database.execute(
        "INSERT INTO vmn_allocation (vmn, phone, side, created_at) VALUES ($1, $2, $3, 0)",
        pool[0],
        "+1444",
        "@mallory:hs",
    )
    assert await db.VmnAllocations.allocate("@alice:hs", "+1444", pool) == pool[1]
    assert await db.VmnAllocations.side_for(pool[0], "+1444") == "@mallory:hs"


async def test_inbox_and_receipts_are_kept_until_handled(database: object) -> None:
    await db.SmsInbox.store("smsc-a", "+1666", "+1555", "hello", 2, (2,))
    [stored] = await db.SmsInbox.unposted()
    assert (stored.text, stored.parts, stored.missing) == ("hello", 2, (2,))
    await db.SmsInbox.mark(stored.seq, "posted", "!room:hs", "$ev")
    assert await db.SmsInbox.unposted() == []
    await db.SmsReceipts.store("smsc-a", "id-9", "delivered", "delivered to the phone")
    [receipt] = await db.SmsReceipts.unhandled()
    await db.SmsReceipts.mark_handled(receipt.seq)
    assert await db.SmsReceipts.unhandled() == []


async def test_opt_outs(database: object) -> None:
    await db.OptOuts.add("+1666")
    await db.OptOuts.add("+1666")
    assert await db.OptOuts.has("+1666")
    await db.OptOuts.remove("+1666")
    assert not await db.OptOuts.has("+1666")


async def test_inbound_parts_survive_until_the_message_is_complete(database: object) -> None:
    from smpp.reassembly import Part

    store = db.InboundParts()
    part = Part(
        source="1666",
        destination="1555",
        data_coding=8,
        body="hé".encode("utf-16-be"),
        reference=9,
        total=2,
        seqnum=1,
    )
    await store.save_part("smsc-a", part)
    await store.save_part("smsc-a", part)  # a redelivered part is saved once
    assert await store.load_parts() == [("smsc-a", part)]
    await store.drop_parts(("1666", "1555", 9, 2))
    assert await store.load_parts() == []


def text(message_id: str) -> OutboundMessage:
    return OutboundMessage(id=message_id, source="+1555", destination="+1666", text=message_id)


async def test_a_transactions_outbox_rows_are_stored_with_its_record_and_queued_after(
    database: object,
) -> None:
    queued: list[str] = []

    async def handle() -> None:
        pending = db.TransactionLog.pending()
        assert pending is not None
        await db.VmnAllocations.allocate("@alice:hs", "+1777", ["+447700900001"], "!dm:hs", "@p:hs", pending)
        for message_id in ("a1", "a2"):
            assert queued == [], "nothing is queued before the commit"
            pending.add(
                db.SmsOutbox.enqueue_statements(text(message_id), None), lambda m=message_id: queued.append(m)
            )

    await db.TransactionLog.process("txn-a", handle)
    assert queued == ["a1", "a2"]
    assert await db.TransactionLog.seen("txn-a")
    assert [m.id for m in await db.SmsOutbox().load_pending()] == ["a1", "a2"]
    assert db.TransactionLog.pending() is None, "outside a transaction, writers commit their own"
    db.VmnAllocations.forget_all()
    assert await db.VmnAllocations.conversation("+447700900001", "+1777") == ("@alice:hs", "!dm:hs", "@p:hs")


async def test_a_pair_made_and_moved_in_one_transaction_is_stored_with_its_last_room(
    database: object,
) -> None:
    """The same user texts one phone from two rooms in one transaction: the reply goes to the second."""

    async def handle() -> None:
        pending = db.TransactionLog.pending()
        vmn = await db.VmnAllocations.allocate(
            "@bob:hs", "+1888", ["+447700900001"], "!one:hs", "@p:hs", pending
        )
        await db.VmnAllocations.remember_room(vmn, "+1888", "!two:hs", "@p:hs")

    await db.TransactionLog.process("txn-moved", handle)
    db.VmnAllocations.forget_all()  # a restart
    assert await db.VmnAllocations.conversation("+447700900001", "+1888") == ("@bob:hs", "!two:hs", "@p:hs")


async def test_a_transaction_that_cannot_be_stored_leaves_nothing_behind(database: object) -> None:
    queued: list[str] = []

    await db.Ledger.top_up("@alice:hs", 10, "t")

    async def handle() -> None:
        pending = db.TransactionLog.pending()
        assert pending is not None
        vmn = await db.VmnAllocations.allocate("@alice:hs", "+1666", ["+447700900001"], pending=pending)
        assert vmn == "+447700900001"
        assert await db.Ledger.try_reserve("@alice:hs", 10, "sms:b1", floor=0, pending=pending)
        assert not await db.Ledger.try_reserve("@alice:hs", 1, "sms:b2", floor=0), "held from now on"
        pending.add(db.SmsOutbox.enqueue_statements(text("b1"), None), lambda: queued.append("b1"))
        pending.add([("INSERT INTO no_such_table (x) VALUES ($1)", (1,))], lambda: queued.append("bad"))

    with pytest.raises(Exception):  # noqa: B017 - each backend names a missing table its own way
        await db.TransactionLog.process("txn-b", handle)
    assert queued == []
    assert not await db.TransactionLog.seen("txn-b"), "the homeserver will retry it"
    assert await db.SmsOutbox().load_pending() == []
    assert await db.VmnAllocations.for_side("@alice:hs", "+1666") is None, "the pair was taken back"
    assert (await db.Ledger.account("@alice:hs")).reserved == 0
    assert await db.Ledger.try_reserve("@alice:hs", 10, "sms:b3", floor=0), "so was the hold"
    await db.TransactionLog.record("txn-after")  # the writer goes on after a failed commit
    assert await db.TransactionLog.seen("txn-after")


async def test_an_event_stored_before_its_record_is_not_queued_twice_on_retry(database: object) -> None:
    """An older bridge stored the outbox row and its hold and crashed before the record: the retry stores
    the rest, and the hold counts once."""
    await db.SmsOutbox().enqueue(text("c1"))
    await db.Ledger.top_up("@alice:hs", 20, "t")
    assert await db.Ledger.try_reserve("@alice:hs", 4, "sms:c1", floor=0)
    queued: list[str] = []

    async def handle() -> None:
        pending = db.TransactionLog.pending()
        assert pending is not None
        for message_id in ("c1", "c2"):
            assert await db.Ledger.try_reserve("@alice:hs", 4, f"sms:{message_id}", floor=0, pending=pending)
            pending.add(
                db.SmsOutbox.enqueue_statements(text(message_id), None), lambda m=message_id: queued.append(m)
            )

    await db.TransactionLog.process("txn-c", handle)
    assert queued == ["c2"], "c1 was resumed from the outbox at start-up, not queued again"
    assert (await db.Ledger.account("@alice:hs")).reserved == 8
    assert await db.Ledger.try_reserve("@alice:hs", 12, "sms:c3", floor=0), "memory counts each hold once"
    assert not await db.Ledger.try_reserve("@alice:hs", 1, "sms:c4", floor=0)
    assert await db.TransactionLog.seen("txn-c")
    assert [m.id for m in await db.SmsOutbox().load_pending()] == ["c1", "c2"]
