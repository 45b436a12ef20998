"""Rating and the ledger (both database backends): integer money, idempotent changes, no overdraft."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge import db
from telebridge.rating import NoRate, Rate, RateTable, denied


def test_longest_prefix_wins_and_unknown_destinations_need_a_default() -> None:
    table = RateTable.from_config([{"prefix": "44", "sms": 5}, {"prefix": "447", "sms": 8}])
    assert table.rate_for("+447700900123").sms == 8
    assert table.rate_for("+442079460000").sms == 5
    with pytest.raises(NoRate):
        table.rate_for("+15005550006")
    assert RateTable.from_config([{"prefix": "", "sms": 1}]).rate_for("+15005550006").sms == 1


def test_call_billing_increments() -> None:
    per_minute = Rate("", 0, call_minute=60, connection_fee=10, first_increment=60, next_increment=60)
    assert per_minute.call_cost(0) == 0, "unanswered calls cost nothing"
    assert per_minute.call_cost(1) == 10 + 60
    assert per_minute.call_cost(61) == 10 + 120
    per_second = Rate("", 0, call_minute=60, connection_fee=0, first_increment=1, next_increment=1)
    assert per_second.call_cost(2.2) == 3
    assert per_second.affordable_seconds(5) == 5
    assert per_minute.affordable_seconds(69) == 0
    assert denied("+19005551234", ["1900"]) and not denied("+15005551234", ["1900"])


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[str]:
    database = db.create_database(database_url)
    db.init(database)
    await database.start()
    try:
        yield database_url
    finally:
        await database.stop()


async def test_a_retried_top_up_counts_once(ledger: str) -> None:
    await db.Ledger.top_up("@a:hs", 500, "payment-1")
    account = await db.Ledger.top_up("@a:hs", 500, "payment-1")
    assert (account.balance, account.reserved) == (500, 0)
    assert [e.kind for e in await db.Ledger.history("@a:hs")] == ["topup"]


async def test_two_spends_at_once_with_credit_for_one_let_exactly_one_through(ledger: str) -> None:
    await db.Ledger.top_up("@b:hs", 10, "t")
    results = await asyncio.gather(
        *(db.Ledger.try_reserve("@b:hs", 10, f"sms:{i}", floor=0) for i in range(2))
    )
    assert sorted(results) == [False, True]
    assert (await db.Ledger.account("@b:hs")).available == 0


async def test_many_concurrent_spends_never_overdraw(ledger: str) -> None:
    rng = random.Random(7)
    await db.Ledger.top_up("@c:hs", 100, "t")
    amounts = [rng.randint(1, 30) for _ in range(30)]
    results = await asyncio.gather(
        *(db.Ledger.try_reserve("@c:hs", a, f"k{i}", floor=0) for i, a in enumerate(amounts))
    )
    held = sum(a for a, ok in zip(amounts, results, strict=True) if ok)
    account = await db.Ledger.account("@c:hs")
    assert held == account.reserved <= 100
    for i, ok in enumerate(results):
        if ok:
            await db.Ledger.settle(f"k{i}", None)
    assert (await db.Ledger.account("@c:hs")).balance == 100 - held >= 0


async def test_settle_charges_what_happened_and_release_gives_back(ledger: str) -> None:
    await db.Ledger.top_up("@d:hs", 100, "t")
    assert await db.Ledger.try_reserve("@d:hs", 60, "call:1", floor=0)
    await db.Ledger.settle("call:1", 25)
    await db.Ledger.settle("call:1", 25)  # settling twice changes nothing
    assert await db.Ledger.try_reserve("@d:hs", 10, "sms:1", floor=0)
    await db.Ledger.settle("sms:1", 0)
    account = await db.Ledger.account("@d:hs")
    assert (account.balance, account.reserved) == (75, 0)
    assert not await db.Ledger.try_reserve("@d:hs", 100, "too-much", floor=0)
    assert await db.Ledger.try_reserve("@d:hs", 100, "postpaid", floor=50), "postpaid may go below zero"


async def test_settles_sharing_commits_apply_once_each(ledger: str) -> None:
    """Settlements go through the group commit: many at once share commits, repeats of a key count once."""
    await db.Ledger.top_up("@s:hs", 1000, "t")
    for i in range(20):
        assert await db.Ledger.try_reserve("@s:hs", 10, f"sms:{i}", floor=0)
    await asyncio.gather(
        *(db.Ledger.settle(f"sms:{i}", None if i % 2 else 0) for i in range(20) for _ in range(3))
    )
    account = await db.Ledger.account("@s:hs")
    assert (account.balance, account.reserved) == (1000 - 10 * 10, 0), "10 charged, 10 released, once each"
    kinds = [e.kind for e in await db.Ledger.history("@s:hs", 100)]
    assert (kinds.count("charge"), kinds.count("release")) == (10, 10)


async def test_a_hold_asked_for_again_answers_as_before_whatever_the_credit_now(ledger: str) -> None:
    """Holds are decided in memory; a retried key still finds its earlier hold, once."""
    await db.Ledger.top_up("@r:hs", 10, "t")
    assert await db.Ledger.try_reserve("@r:hs", 10, "sms:once", floor=0)
    assert await db.Ledger.try_reserve("@r:hs", 10, "sms:once", floor=0), (
        "held before, though nothing is left"
    )
    assert not await db.Ledger.try_reserve("@r:hs", 10, "sms:other", floor=0)
    assert (await db.Ledger.account("@r:hs")).reserved == 10
    await db.Ledger.top_up("@r:hs", 5, "t2")
    await db.Ledger.charge("@r:hs", 5, "in-sms:1", "+1666", "text received")
    assert not await db.Ledger.try_reserve("@r:hs", 6, "sms:third", floor=0), "the charge used the top-up"
    await db.Ledger.top_up("@r:hs", 6, "t3")
    assert await db.Ledger.try_reserve("@r:hs", 6, "sms:third", floor=0)
    await db.Ledger.settle("sms:once", None)
    await db.Ledger.settle("sms:third", 0)
    account = await db.Ledger.account("@r:hs")
    assert (account.balance, account.reserved) == (10 + 5 - 5 + 6 - 10, 0)


async def test_a_settlement_and_the_statements_given_with_it_are_one_commit(ledger: str) -> None:
    await db.Ledger.top_up("@u:hs", 100, "t")
    assert await db.Ledger.try_reserve("@u:hs", 10, "sms:m1", floor=0)
    bad = [("INSERT INTO no_such_table (x) VALUES ($1)", (1,))]
    with pytest.raises(Exception):  # noqa: B017 - each backend names a missing table its own way
        await db.Ledger.settle("sms:m1", None, "text sent", also=bad)
    account = await db.Ledger.account("@u:hs")
    assert (account.balance, account.reserved) == (100, 10), "neither was stored"
    await db.Ledger.settle("sms:m1", None, "text sent")  # the gateway tries again
    account = await db.Ledger.account("@u:hs")
    assert (account.balance, account.reserved) == (90, 0)
    assert await db.Ledger.try_reserve("@u:hs", 90, "sms:m2", floor=0), "memory agrees"


async def test_a_restart_in_the_middle_of_a_charge_loses_nothing(database_url: str) -> None:
    database = db.create_database(database_url)
    db.init(database)
    await database.start()
    await db.Ledger.top_up("@e:hs", 100, "t")
    assert await db.Ledger.try_reserve("@e:hs", 40, "call:9", floor=0)
    await database.stop()
    database = db.create_database(database_url)
    db.init(database)
    await database.start()
    try:
        assert (await db.Ledger.account("@e:hs")).reserved == 40
        await db.Ledger.settle("call:9", 30)
        account = await db.Ledger.account("@e:hs")
        assert (account.balance, account.reserved) == (70, 0)
    finally:
        await database.stop()


def test_sliding_window_limits_per_user_and_frees_up_with_time() -> None:
    from telebridge.limits import SlidingWindow

    window = SlidingWindow(limit=3, window=60)
    assert window.allow("@a:hs", 0.0, count=2)
    assert not window.allow("@a:hs", 1.0, count=2), "two more do not fit; nothing is counted"
    assert window.allow("@a:hs", 1.0)
    assert not window.allow("@a:hs", 2.0)
    assert window.allow("@b:hs", 2.0), "limits are per user"
    assert window.retry_after("@a:hs", 2.0) == 58.0
    assert window.allow("@a:hs", 60.5, count=2), "the first two left the window"
    assert SlidingWindow(limit=0).allow("@a:hs", 0.0, count=1000), "0 means no limit"


async def test_spend_in_the_last_day_counts_charges_and_holds(ledger: str) -> None:
    await db.Ledger.top_up("@f:hs", 100, "t")
    assert await db.Ledger.try_reserve("@f:hs", 30, "sms:a", floor=0)
    await db.Ledger.settle("sms:a", None)
    assert await db.Ledger.try_reserve("@f:hs", 20, "call:b", floor=0)
    assert await db.Ledger.spent_since("@f:hs", 0) == 50


async def test_spend_in_the_last_day_counts_holds_still_waiting_for_their_commit(ledger: str) -> None:
    """Two texts of one appservice transaction: the second's daily-limit check sees the first's hold."""
    from telebridge.db.txn import PendingWrites

    await db.Ledger.top_up("@f2:hs", 100, "t")
    pending = PendingWrites()
    assert await db.Ledger.try_reserve("@f2:hs", 30, "sms:x", floor=0, pending=pending)
    assert await db.Ledger.spent_since("@f2:hs", 0) == 30
    assert (await db.Ledger.account("@f2:hs")).reserved == 0, "not stored yet"


async def test_incoming_traffic_is_charged_even_below_zero_and_once(ledger: str) -> None:
    await db.Ledger.charge("@g:hs", 5, "in-sms:1", "+1666", "text received")
    await db.Ledger.charge("@g:hs", 5, "in-sms:1", "+1666", "text received")
    assert (await db.Ledger.account("@g:hs")).balance == -5


async def test_holds_left_by_a_crash_are_settled_on_start(ledger: str) -> None:
    from telebridge.config import Config
    from telebridge.credit import Credit

    config = Config.load(
        None,
        environ={
            "TELEBRIDGE_CREDIT__ENABLED": "true",
            "TELEBRIDGE_CREDIT__RATES": '[{prefix: "", sms: 5, call_minute: 60, increments: [1, 1]}]',
        },
    )
    credit = Credit(config)
    await db.Ledger.top_up("@h:hs", 100, "t")
    # A text reserved but never stored (crash before the outbox write), a call that was answered and ended
    # (crash before settling), and a call whose end was lost.
    assert await db.Ledger.try_reserve("@h:hs", 5, "sms:lost", floor=0)
    assert await db.Ledger.try_reserve("@h:hs", 1, "call:ended", floor=0)
    await db.CallRecords.start("ended", "outbound", "@h:hs", "!r:hs", "+15005550006")
    await db.CallRecords.answered("ended")
    await db.CallRecords.ended("ended", "answered", "user_hangup", None, "PCMU", None)
    await db.Ledger.db.execute("UPDATE call_record SET answered_at = ended_at - 3000 WHERE call_id='ended'")
    assert await db.Ledger.try_reserve("@h:hs", 1, "call:cut", floor=0)
    await db.CallRecords.start("cut", "outbound", "@h:hs", "!r:hs", "+15005550006")
    await db.CallRecords.answered("cut")
    await credit.recover()
    account = await db.Ledger.account("@h:hs")
    assert account.reserved == 0
    assert account.balance == 100 - 3 - 1, (
        "3 s for the ended call, the first increment for the cut one, text free"
    )


@settings(max_examples=25, deadline=None)
@given(
    balance=st.integers(min_value=0, max_value=200),
    spends=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=25),
)
def test_no_interleaving_of_concurrent_spends_overdraws(
    tmp_path_factory: pytest.TempPathFactory, balance: int, spends: list[int]
) -> None:
    async def run() -> None:
        database = db.create_database(f"sqlite:{tmp_path_factory.mktemp('ledger') / 'l.db'}")
        db.init(database)
        await database.start()
        try:
            await db.Ledger.top_up("@p:hs", balance, "t")
            results = await asyncio.gather(
                *(db.Ledger.try_reserve("@p:hs", amount, f"k{i}", floor=0) for i, amount in enumerate(spends))
            )
            held = sum(a for a, ok in zip(spends, results, strict=True) if ok)
            account = await db.Ledger.account("@p:hs")
            assert account.reserved == held <= balance
            assert all(ok or amount > balance - held for amount, ok in zip(spends, results, strict=True)), (
                "a spend is refused only when what was left could not cover it"
            )
        finally:
            await database.stop()

    asyncio.run(run())


@settings(max_examples=25, deadline=None)
@given(
    balance=st.integers(min_value=0, max_value=200),
    operations=st.lists(
        st.tuples(st.sampled_from(["hold", "top_up", "charge"]), st.integers(min_value=1, max_value=80)),
        min_size=1,
        max_size=25,
    ),
    settle_every=st.integers(min_value=1, max_value=4),
)
def test_what_memory_allows_matches_the_ledger_whatever_runs_at_once(
    tmp_path_factory: pytest.TempPathFactory,
    balance: int,
    operations: list[tuple[str, int]],
    settle_every: int,
) -> None:
    """Holds, settlements, top-ups and charges all at once: no hold overdraws what the ledger shows at the
    end, and the in-memory account agrees with the stored one."""

    async def run() -> None:
        database = db.create_database(f"sqlite:{tmp_path_factory.mktemp('ledger') / 'l.db'}")
        db.init(database)
        await database.start()
        try:
            await db.Ledger.top_up("@q:hs", balance, "t")

            async def one(i: int, kind: str, amount: int) -> int:
                if kind == "top_up":
                    await db.Ledger.top_up("@q:hs", amount, f"t{i}")
                    return 0
                if kind == "charge":
                    await db.Ledger.charge("@q:hs", amount, f"c{i}", None, None)
                    return 0
                if not await db.Ledger.try_reserve("@q:hs", amount, f"h{i}", floor=0):
                    return 0
                if i % settle_every == 0:
                    await db.Ledger.settle(f"h{i}", amount // 2)
                    return 0
                return amount

            still_held = await asyncio.gather(*(one(i, k, a) for i, (k, a) in enumerate(operations)))
            account = await db.Ledger.account("@q:hs")
            assert account.reserved == sum(still_held)
            charged_in = sum(a for k, a in operations if k == "charge")
            assert account.available >= -charged_in, "only incoming charges may take it below zero"
            known = db.Ledger._known["@q:hs"]
            assert (known.balance, known.reserved) == (account.balance, account.reserved)
        finally:
            await database.stop()

    asyncio.run(run())
