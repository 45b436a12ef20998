"""``credit_account`` and ``credit_entry``: balances in integer minor units and the ledger behind them.

Every change inserts a ledger entry under its idempotency key, in the same database transaction as the
account change: if the key exists the change was already applied and nothing happens (a retried top-up
or charge counts once). Spending is two-step: ``reserve`` holds an amount only if the account can afford
it, then ``settle`` turns the hold into the real charge (which may be smaller) or ``release`` drops it.

Holds and settlements happen once per text, so they go through the group commit rather than taking a
transaction (and an fsync) each. Neither needs a read: only this process writes the ledger, so what an
account can spend is kept in memory and a hold is decided there (two spends at once with credit for one
cannot both pass: the check and the hold have no await between them), and a settlement's statements
are guarded in SQL by its own key. Top-ups and incoming charges, which are rare, keep a transaction of
their own and keep the memory in step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from mautrix.util.async_db import Database

from .group_commit import UNIQUE_VIOLATIONS, GroupCommit, Statement
from .txn import PendingWrites


def _now() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Account:
    user_id: str
    balance: int
    reserved: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    amount: int
    reference: str | None
    description: str | None
    created_at: int


class _Known:
    """An account as this process knows it: the stored balance and reserved, with each change that lowers
    what is available counted from before its commit and each change that raises it from after, so the
    figure here never shows more credit than the database does or is about to."""

    __slots__ = ("balance", "reserved")

    def __init__(self, balance: int, reserved: int) -> None:
        self.balance = balance
        self.reserved = reserved


class Ledger:
    """The ledger's changes, and (since only this process writes the ledger) what each account can spend,
    kept in memory: a hold is decided there, without a read, and written through the group commit.

    An account is read once, before this process first changes it; every change after that goes through
    these methods, which keep the memory and the database in step (see ``_Known``)."""

    db: ClassVar[Database]
    writes: ClassVar[GroupCommit]
    _settling: ClassVar[dict[str, asyncio.Future[None]]] = {}
    _known: ClassVar[dict[str, _Known]] = {}
    _loading: ClassVar[dict[str, asyncio.Lock]] = {}
    _holds: ClassVar[dict[str, tuple[str, int]]] = {}  # key → (user, amount): held here, not yet settled

    @classmethod
    def forget_all(cls) -> None:
        """Drop what is kept in memory (a new database was opened)."""
        cls._settling.clear()
        cls._known.clear()
        cls._loading.clear()
        cls._holds.clear()

    @classmethod
    async def _account_here(cls, user_id: str) -> _Known:
        """The account in memory, read before this process first changes it (one read per account)."""
        known = cls._known.get(user_id)
        if known is not None:
            return known
        async with cls._loading.setdefault(user_id, asyncio.Lock()):
            known = cls._known.get(user_id)
            if known is None:
                row = await cls.db.fetchrow(
                    "SELECT balance, reserved FROM credit_account WHERE user_id=$1", user_id
                )
                known = cls._known[user_id] = _Known(row["balance"], row["reserved"]) if row else _Known(0, 0)
        return known

    @classmethod
    async def account(cls, user_id: str) -> Account:
        row = await cls.db.fetchrow("SELECT balance, reserved FROM credit_account WHERE user_id=$1", user_id)
        return Account(user_id, row["balance"], row["reserved"]) if row else Account(user_id, 0, 0)

    @classmethod
    async def open_holds(cls, prefix: str) -> list[tuple[str, str, int]]:
        """(key, user, amount) of reservations under ``prefix`` that were never settled."""
        rows = await cls.db.fetch(
            "SELECT r.idempotency_key, r.user_id, r.amount FROM credit_entry r WHERE r.kind='reserve' "
            "AND r.idempotency_key LIKE $1 AND NOT EXISTS "
            "(SELECT 1 FROM credit_entry s WHERE s.idempotency_key = r.idempotency_key || ':settle')",
            prefix + "%",
        )
        return [(r["idempotency_key"], r["user_id"], r["amount"]) for r in rows]

    @classmethod
    async def spent_since(cls, user_id: str, since_ms: int) -> int:
        """Charged since ``since_ms``, plus what is held right now (it is about to be spent). The holds
        come from memory, which counts those still waiting for their appservice transaction's commit:
        two texts of one transaction see each other (a settlement in flight may count twice, never
        zero times)."""
        held = (await cls._account_here(user_id)).reserved
        charged = await cls.db.fetchval(
            "SELECT COALESCE(SUM(-amount), 0) FROM credit_entry WHERE user_id=$1 AND kind='charge' AND created_at >= $2",
            user_id,
            since_ms,
        )
        return int(charged or 0) + held

    @classmethod
    async def history(cls, user_id: str, limit: int = 20) -> list[Entry]:
        rows = await cls.db.fetch(
            "SELECT seq, kind, amount, reference, description, created_at FROM credit_entry "
            "WHERE user_id=$1 ORDER BY seq DESC LIMIT $2",
            user_id,
            limit,
        )
        return [
            Entry(r["seq"], r["kind"], r["amount"], r["reference"], r["description"], r["created_at"])
            for r in rows
        ]

    @classmethod
    async def _entry(
        cls,
        conn: Any,
        user_id: str,
        kind: str,
        amount: int,
        key: str,
        reference: str | None,
        description: str | None,
    ) -> bool:
        """Insert the ledger entry; False when the key was used before (already applied)."""
        await conn.execute(
            "INSERT INTO credit_account (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING", user_id
        )
        inserted = await conn.fetchval(
            "INSERT INTO credit_entry (user_id, kind, amount, idempotency_key, reference, description, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq",
            user_id,
            kind,
            amount,
            key,
            reference,
            description,
            _now(),
        )
        return inserted is not None

    @classmethod
    async def top_up(cls, user_id: str, amount: int, key: str, description: str | None = None) -> Account:
        """Add (or, with a negative amount, remove) credit; applied once per ``key``."""
        known = await cls._account_here(user_id)
        lowers = min(amount, 0)
        known.balance += lowers  # a removal counts from before its commit
        applied = False
        try:
            conn: Any
            async with cls.db.acquire() as conn, conn.transaction():
                if await cls._entry(
                    conn, user_id, "topup" if amount >= 0 else "adjust", amount, key, None, description
                ):
                    await conn.execute(
                        "UPDATE credit_account SET balance = balance + $2 WHERE user_id=$1", user_id, amount
                    )
                    applied = True
        finally:
            known.balance += (amount - lowers) if applied else -lowers
        return await cls.account(user_id)

    @classmethod
    async def charge(
        cls, user_id: str, amount: int, key: str, reference: str | None, description: str | None
    ) -> None:
        """Charge at once, even below zero (incoming traffic is delivered whatever the balance)."""
        if amount <= 0:
            return
        known = await cls._account_here(user_id)
        known.balance -= amount  # counts from before the commit
        applied = False
        try:
            conn: Any
            async with cls.db.acquire() as conn, conn.transaction():
                if await cls._entry(conn, user_id, "charge", -amount, key, reference, description):
                    await conn.execute(
                        "UPDATE credit_account SET balance = balance - $2 WHERE user_id=$1", user_id, amount
                    )
                    applied = True
        finally:
            if not applied:
                known.balance += amount

    @classmethod
    async def reserve(
        cls,
        user_id: str,
        amount: int,
        key: str,
        floor: int | None,
        reference: str | None = None,
        pending: PendingWrites | None = None,
    ) -> bool:
        """Hold ``amount`` if ``balance - reserved - amount`` stays at or above ``-floor`` (``floor`` None:
        no limit). True if held now or under this key before.

        Decided in memory, where the check and the hold happen with nothing in between, so two spends at
        once with credit for one cannot both pass; the hold is then written through the group commit (a
        text's hold shares its commit with other writes). A key used before makes that write fail: the
        hold is taken back and the earlier one answers.

        With ``pending`` (the appservice transaction of the text it pays for), the hold is written with
        that transaction's commit, together with the text's outbox row, and taken back if that commit
        fails (a hold under a key used before is taken back too: the earlier one stands). Until then
        such a repeated hold counts twice here, which can only refuse a text, never overdraw; it needs a
        transaction that repeats an event whose hold was stored without the transaction's record."""
        known = await cls._account_here(user_id)
        if floor is not None and known.balance - known.reserved - amount < -floor:
            if await cls._held_before(key):
                return True
            raise _Refused()
        known.reserved += amount  # counts from before the commit
        statements: list[Statement] = [
            ("INSERT INTO credit_account (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING", (user_id,)),
            (
                "INSERT INTO credit_entry (user_id, kind, amount, idempotency_key, reference, description, "
                "created_at) VALUES ($1, 'reserve', $2, $3, $4, NULL, $5)",
                (user_id, amount, key, reference, _now()),
            ),
            ("UPDATE credit_account SET reserved = reserved + $2 WHERE user_id=$1", (user_id, amount)),
        ]
        if pending is not None:

            def take_back() -> None:
                known.reserved -= amount

            pending.add(statements, partial(cls._holds.__setitem__, key, (user_id, amount)), take_back)
            return True
        try:
            await cls.writes.commit(statements)
        except UNIQUE_VIOLATIONS:
            known.reserved -= amount
            return await cls._held_before(key)
        except BaseException:
            known.reserved -= amount
            raise
        cls._holds[key] = (user_id, amount)
        return True

    @classmethod
    async def _held_before(cls, key: str) -> bool:
        return bool(
            await cls.db.fetchval(
                "SELECT 1 FROM credit_entry WHERE idempotency_key=$1 AND kind='reserve'", key
            )
        )

    @classmethod
    async def try_reserve(
        cls,
        user_id: str,
        amount: int,
        key: str,
        floor: int | None,
        reference: str | None = None,
        pending: PendingWrites | None = None,
    ) -> bool:
        """:meth:`reserve`, False (and nothing recorded) when the account cannot afford it."""
        try:
            return await cls.reserve(user_id, amount, key, floor, reference, pending)
        except _Refused:
            return False

    @classmethod
    async def settle(
        cls, key: str, charge: int | None, description: str | None = None, also: Sequence[Statement] = ()
    ) -> None:
        """Turn the hold under ``key`` into a charge of ``charge`` (None: the held amount; 0: release), in
        one commit with the statements ``also`` (the text's final status: both are stored or neither).

        Two statements through the group commit, so a text's settlement shares the commit of other
        writes instead of taking a transaction (and an fsync) of its own. Both read what they need in SQL
        and are guarded by the settle entry's idempotency key, so they apply once, however often they
        run: the account changes only while no settle entry exists, and the entry is inserted right
        after, in the same transaction. Settles of one key take turns here, so two of them are never in
        one batch, where the group commit runs all updates before all inserts."""
        while (earlier := cls._settling.get(key)) is not None:
            await earlier
        done = asyncio.get_running_loop().create_future()
        cls._settling[key] = done
        try:
            await cls._settle(key, charge, description, also)
        finally:
            del cls._settling[key]
            done.set_result(None)

    @classmethod
    async def _settle(
        cls, key: str, charge: int | None, description: str | None, also: Sequence[Statement]
    ) -> None:
        hold = cls._holds.pop(key, None)
        if hold is None:  # held by an earlier run of the bridge (settled at start-up), or settled already
            row = await cls.db.fetchrow(
                "SELECT r.user_id, r.amount FROM credit_entry r WHERE r.idempotency_key=$1 AND r.kind='reserve' "
                "AND NOT EXISTS (SELECT 1 FROM credit_entry s WHERE s.idempotency_key = $1 || ':settle')",
                key,
            )
            if row is None:
                if also:
                    await cls.writes.commit(also)
                return
            hold = (row["user_id"], row["amount"])
        user_id, held = hold
        known = await cls._account_here(user_id)
        charged = held if charge is None else charge
        known.balance -= charged  # counts from before the commit; the hold is freed after it
        try:
            await cls.writes.commit(
                [
                    *also,
                    (_SETTLE_ACCOUNT, (key, charge)),
                    (_SETTLE_ENTRY, (key, charge, description, _now())),
                ]
            )
        except BaseException:
            known.balance += charged
            cls._holds[key] = hold
            raise
        known.reserved -= held


#: The hold's amount comes off ``reserved``, the charge off ``balance``; nothing once settled.
_SETTLE_ACCOUNT = (
    "UPDATE credit_account SET "
    "reserved = reserved - (SELECT r.amount FROM credit_entry r WHERE r.idempotency_key=$1 AND r.kind='reserve'), "
    "balance = balance - COALESCE($2, (SELECT r.amount FROM credit_entry r "
    "WHERE r.idempotency_key=$1 AND r.kind='reserve')) "
    "WHERE user_id = (SELECT r.user_id FROM credit_entry r WHERE r.idempotency_key=$1 AND r.kind='reserve') "
    "AND NOT EXISTS (SELECT 1 FROM credit_entry s WHERE s.idempotency_key = $1 || ':settle')"
)
#: The settle entry (a charge, or a release when nothing is charged), under the key ``<hold>:settle``.
_SETTLE_ENTRY = (
    "INSERT INTO credit_entry (user_id, kind, amount, idempotency_key, reference, description, created_at) "
    "SELECT r.user_id, CASE WHEN COALESCE($2, r.amount) <> 0 THEN 'charge' ELSE 'release' END, "
    "-COALESCE($2, r.amount), $1 || ':settle', r.reference, $3, $4 "
    "FROM credit_entry r WHERE r.idempotency_key=$1 AND r.kind='reserve' "
    "ON CONFLICT (idempotency_key) DO NOTHING"
)


class _Refused(Exception):
    """The guarded reservation found too little credit; rolls the ledger entry back."""
