"""SMS tables. ``SmsOutbox`` is the durable outbox that ``smpp.gateway.Gateway`` drains (it implements
``smpp.outbox.Outbox``): every method has committed its write when it returns, so a restart resumes from
``load_pending()`` and nothing the bridge acknowledged to the homeserver is lost."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from mautrix.util.async_db import Database

from smpp.outbox import OutboundMessage, OutboxState
from smpp.reassembly import Part, PartKey

from .group_commit import UNIQUE_VIOLATIONS, GroupCommit, Statement
from .txn import PendingWrites


def _now() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class OutboxOrigin:
    """Where an outbound SMS came from in Matrix, to show its receipts there."""

    room_id: str
    event_id: str
    puppet_mxid: str


@dataclass(frozen=True)
class SentMessage:
    id: str
    origin: OutboxOrigin | None
    destination: str
    state: str
    error: str | None
    receipt: str | None


class SmsOutbox:
    db: ClassVar[Database]
    writes: ClassVar[GroupCommit]

    def __init__(self) -> None:
        self._origins: dict[str, OutboxOrigin] = {}
        #: Settles each text's credit hold when its fate is stored (``telebridge.credit.Credit``).
        self.credit: Any = None

    def attach_origin(self, message_id: str, origin: OutboxOrigin) -> None:
        """Remember the Matrix event a message is for; stored with it by :meth:`enqueue`."""
        self._origins[message_id] = origin

    async def enqueue(self, message: OutboundMessage) -> None:
        await self.writes.commit(self.enqueue_statements(message, self._origins.pop(message.id, None)))

    @staticmethod
    def enqueue_statements(message: OutboundMessage, origin: OutboxOrigin | None) -> list[Statement]:
        """What :meth:`enqueue` writes, for a caller that commits it with writes of its own (an appservice
        transaction's record). A row with the same ``id`` makes the commit fail with a unique violation."""
        return [
            (
                "INSERT INTO sms_outbox (id, room_id, event_id, puppet_mxid, source, destination, text, "
                "registered_delivery, state, reference, segments, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
                (
                    message.id,
                    origin.room_id if origin else None,
                    origin.event_id if origin else None,
                    origin.puppet_mxid if origin else None,
                    message.source,
                    message.destination,
                    message.text,
                    message.registered_delivery,
                    message.state.value,
                    message.reference,
                    message.segments,
                    _now(),
                ),
            )
        ]

    async def load_pending(self) -> list[OutboundMessage]:
        rows = await self.db.fetch(
            "SELECT id, source, destination, text, registered_delivery, state, reference, segments, smsc, error "
            "FROM sms_outbox WHERE state IN ('pending', 'submitting') ORDER BY seq"
        )
        messages: list[OutboundMessage] = []
        for row in rows:
            parts = await self.db.fetch(
                "SELECT idx, smsc_message_id FROM sms_outbox_part WHERE message_id=$1 ORDER BY idx", row["id"]
            )
            messages.append(
                OutboundMessage(
                    id=row["id"],
                    source=row["source"],
                    destination=row["destination"],
                    text=row["text"],
                    registered_delivery=bool(row["registered_delivery"]),
                    state=OutboxState(row["state"]),
                    reference=row["reference"],
                    segments=row["segments"],
                    parts={p["idx"]: p["smsc_message_id"] for p in parts},
                    smsc=row["smsc"],
                    error=row["error"],
                )
            )
        return messages

    async def mark_submitting(self, message_id: str, reference: int, segments: int) -> None:
        await self.writes.commit(
            [
                (
                    "UPDATE sms_outbox SET state='submitting', reference=$2, segments=$3, updated_at=$4 WHERE id=$1",
                    (message_id, reference, segments, _now()),
                )
            ]
        )

    async def mark_part_submitted(self, message_id: str, index: int, smsc: str, smsc_message_id: str) -> None:
        await self.writes.commit(
            [
                (
                    "INSERT INTO sms_outbox_part (message_id, idx, smsc, smsc_message_id) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (message_id, idx) DO UPDATE SET smsc=excluded.smsc, "
                    "smsc_message_id=excluded.smsc_message_id",
                    (message_id, index, smsc, smsc_message_id),
                ),
                (
                    "UPDATE sms_outbox SET smsc=COALESCE(smsc, $2), updated_at=$3 WHERE id=$1",
                    (message_id, smsc, _now()),
                ),
            ]
        )

    async def mark_submitted(self, message_id: str) -> None:
        await self._final(
            message_id,
            True,
            [("UPDATE sms_outbox SET state='submitted', updated_at=$2 WHERE id=$1", (message_id, _now()))],
        )

    async def mark_failed(self, message_id: str, reason: str, status: int | None) -> None:
        await self._final(
            message_id,
            False,
            [
                (
                    "UPDATE sms_outbox SET state='failed', error=$2, status=$3, updated_at=$4 WHERE id=$1",
                    (message_id, reason, status, _now()),
                )
            ],
        )

    async def _final(self, message_id: str, sent: bool, statements: list[Statement]) -> None:
        """A text's final status, committed with the settlement of its credit hold when credit is on."""
        if self.credit is not None:
            await self.credit.settle_sms(f"sms:{message_id}", sent, also=statements)
        else:
            await self.writes.commit(statements)

    async def set_receipt(self, message_id: str, outcome: str) -> None:
        await self.db.execute(
            "UPDATE sms_outbox SET receipt=$2, updated_at=$3 WHERE id=$1", message_id, outcome, _now()
        )

    async def get(self, message_id: str) -> SentMessage | None:
        row = await self.db.fetchrow(
            "SELECT id, room_id, event_id, puppet_mxid, destination, state, error, receipt FROM sms_outbox WHERE id=$1",
            message_id,
        )
        return self._sent(row) if row else None

    async def find_by_part(self, smsc: str, smsc_message_id: str) -> SentMessage | None:
        """The message one of whose parts the SMSC accepted under ``smsc_message_id`` (for receipts)."""
        row = await self.db.fetchrow(
            "SELECT o.id, o.room_id, o.event_id, o.puppet_mxid, o.destination, o.state, o.error, o.receipt "
            "FROM sms_outbox_part p JOIN sms_outbox o ON o.id = p.message_id "
            "WHERE p.smsc=$1 AND p.smsc_message_id=$2",
            smsc,
            smsc_message_id,
        )
        return self._sent(row) if row else None

    @staticmethod
    def _sent(row: Any) -> SentMessage:
        origin = (
            OutboxOrigin(row["room_id"], row["event_id"], row["puppet_mxid"])
            if row["room_id"] is not None
            else None
        )
        return SentMessage(row["id"], origin, row["destination"], row["state"], row["error"], row["receipt"])


@dataclass(frozen=True)
class StoredText:
    seq: int
    smsc: str
    source: str
    destination: str
    text: str
    parts: int
    missing: tuple[int, ...]


class SmsInbox:
    """Inbound texts, stored before the SMSC gets its deliver_sm_resp, posted to Matrix afterwards."""

    db: ClassVar[Database]

    @classmethod
    async def store(
        cls, smsc: str, source: str, destination: str, text: str, parts: int, missing: tuple[int, ...]
    ) -> None:
        await cls.db.execute(
            "INSERT INTO sms_inbox (smsc, source, destination, text, parts, missing, state, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, 'stored', $7)",
            smsc,
            source,
            destination,
            text,
            parts,
            ",".join(str(m) for m in missing),
            _now(),
        )

    @classmethod
    async def unposted(cls, limit: int = 100) -> list[StoredText]:
        rows = await cls.db.fetch(
            "SELECT seq, smsc, source, destination, text, parts, missing FROM sms_inbox "
            "WHERE state='stored' ORDER BY seq LIMIT $1",
            limit,
        )
        return [
            StoredText(
                seq=row["seq"],
                smsc=row["smsc"],
                source=row["source"],
                destination=row["destination"],
                text=row["text"],
                parts=row["parts"],
                missing=tuple(int(m) for m in row["missing"].split(",") if m),
            )
            for row in rows
        ]

    @classmethod
    async def mark(
        cls, seq: int, state: str, room_id: str | None = None, event_id: str | None = None
    ) -> None:
        await cls.db.execute(
            "UPDATE sms_inbox SET state=$2, room_id=$3, event_id=$4 WHERE seq=$1",
            seq,
            state,
            room_id,
            event_id,
        )


@dataclass(frozen=True)
class StoredReceipt:
    seq: int
    smsc: str
    smsc_message_id: str
    outcome: str
    reason: str


class SmsReceipts:
    db: ClassVar[Database]

    @classmethod
    async def store(cls, smsc: str, smsc_message_id: str, outcome: str, reason: str) -> None:
        await cls.db.execute(
            "INSERT INTO sms_receipt (smsc, smsc_message_id, outcome, reason, created_at) VALUES ($1, $2, $3, $4, $5)",
            smsc,
            smsc_message_id,
            outcome,
            reason,
            _now(),
        )

    @classmethod
    async def unhandled(cls, limit: int = 100) -> list[StoredReceipt]:
        rows = await cls.db.fetch(
            "SELECT seq, smsc, smsc_message_id, outcome, reason FROM sms_receipt WHERE NOT handled ORDER BY seq LIMIT $1",
            limit,
        )
        return [
            StoredReceipt(r["seq"], r["smsc"], r["smsc_message_id"], r["outcome"], r["reason"]) for r in rows
        ]

    @classmethod
    async def mark_handled(cls, seq: int) -> None:
        await cls.db.execute("UPDATE sms_receipt SET handled=true WHERE seq=$1", seq)


class InboundParts:
    """Parts of long inbound texts awaiting the rest (``smpp.partstore.PartStore``). Each part is
    acknowledged to the SMSC once saved here, so an SMSC that waits for each response before sending
    the next part is not stalled, and parts survive a restart."""

    db: ClassVar[Database]

    async def save_part(self, smsc: str, part: Part) -> None:
        await self.db.execute(
            "INSERT INTO sms_inbound_part (smsc, source, destination, reference, total, seqnum, data_coding, body, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            smsc,
            part.source,
            part.destination,
            part.reference if part.reference is not None else -1,
            part.total,
            part.seqnum,
            part.data_coding,
            part.body,
            _now(),
        )

    async def load_parts(self) -> list[tuple[str, Part]]:
        rows = await self.db.fetch(
            "SELECT smsc, source, destination, reference, total, seqnum, data_coding, body FROM sms_inbound_part "
            "ORDER BY created_at"
        )
        return [
            (
                row["smsc"],
                Part(
                    source=row["source"],
                    destination=row["destination"],
                    data_coding=row["data_coding"],
                    body=bytes(row["body"]),
                    reference=None if row["reference"] == -1 else row["reference"],
                    total=row["total"],
                    seqnum=row["seqnum"],
                ),
            )
            for row in rows
        ]

    async def drop_parts(self, key: PartKey) -> None:
        source, destination, reference, total = key
        await self.db.execute(
            "DELETE FROM sms_inbound_part WHERE source=$1 AND destination=$2 AND reference=$3 AND total=$4",
            source,
            destination,
            reference,
            total,
        )


class PoolExhausted(Exception):
    """Every pool number is already paired with this phone number for another Matrix side."""


class VmnAllocations:
    """The seed's VMN pool: each {Matrix side, phone} pair holds a pool number no other pair with the same
    phone holds, so a reply from that phone to that number identifies exactly one side.

    Allocations never change once made and only this class writes them, so the whole table is read once
    (one query, a row per conversation) and then decided in memory: a phone not in it has no pairs, and a
    first text to it needs no read. New pairs and room changes go through the group commit: a first text
    to 200 phones shares a few commits instead of taking 400 of its own. Allocations for one phone take
    turns (a lock per phone), so no read follows a write; the unique constraints still refuse a pair that
    another writer made, and the table is then read again."""

    db: ClassVar[Database]
    writes: ClassVar[GroupCommit]
    _by_side: ClassVar[dict[tuple[str, str], str]] = {}
    _by_phone: ClassVar[dict[str, dict[str, str]] | None] = None  # phone → {vmn: side}, once read
    _rooms: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {}
    _locks: ClassVar[dict[str, asyncio.Lock]] = {}
    _unstored: ClassVar[dict[tuple[str, str], list[Any]]] = {}  # pairs waiting for their transaction

    @classmethod
    def forget_all(cls) -> None:
        cls._forget_pairs()
        cls._locks.clear()
        cls._unstored.clear()

    @classmethod
    def _forget_pairs(cls) -> None:
        """Read the table again on next use (the locks stay: a task may be holding one)."""
        cls._by_side.clear()
        cls._by_phone = None
        cls._rooms.clear()

    @classmethod
    async def _pairs(cls, phone: str) -> dict[str, str]:
        """Every {vmn: side} pair of ``phone`` (the table is read on first use)."""
        by_phone = cls._by_phone
        if by_phone is None:
            rows = await cls.db.fetch("SELECT vmn, phone, side, room_id, puppet_mxid FROM vmn_allocation")
            by_phone = cls._by_phone  # another task may have read it meanwhile
            if by_phone is None:
                by_phone = cls._by_phone = {}
                for row in rows:
                    by_phone.setdefault(row["phone"], {})[row["vmn"]] = row["side"]
                    cls._by_side[(row["side"], row["phone"])] = row["vmn"]
                    if row["room_id"] is not None:
                        cls._rooms[(row["vmn"], row["phone"])] = (row["room_id"], row["puppet_mxid"])
        pairs = by_phone.get(phone)
        if pairs is None:
            pairs = by_phone[phone] = {}
        return pairs

    @classmethod
    async def for_side(cls, side: str, phone: str) -> str | None:
        cached = cls._by_side.get((side, phone))
        if cached is not None:
            return cached
        await cls._pairs(phone)
        return cls._by_side.get((side, phone))

    @classmethod
    async def side_for(cls, vmn: str, phone: str) -> str | None:
        return (await cls._pairs(phone)).get(vmn)

    @classmethod
    async def conversation(cls, vmn: str, phone: str) -> tuple[str, str | None, str | None] | None:
        """(side, last room, last virtual user) of the pair a reply from ``phone`` to ``vmn`` belongs to."""
        side = (await cls._pairs(phone)).get(vmn)
        if side is None:
            return None
        room_id, puppet_mxid = cls._rooms.get((vmn, phone), (None, None))
        return side, room_id, puppet_mxid

    @classmethod
    async def _insert(
        cls, vmn: str, phone: str, side: str, room_id: str | None, puppet_mxid: str | None
    ) -> bool:
        """Pair ``vmn`` with (side, phone), durably; False (and the pairs read again) if the database
        already holds either pair. Call with the phone's lock held."""
        try:
            await cls.writes.commit([cls._insert_statement(vmn, phone, side, room_id, puppet_mxid)])
        except UNIQUE_VIOLATIONS:
            cls._forget_pairs()
            await cls._pairs(phone)
            return False
        await cls._pairs(phone)
        cls._claim(vmn, phone, side, room_id, puppet_mxid)
        return True

    @staticmethod
    def _insert_statement(
        vmn: str, phone: str, side: str, room_id: str | None, puppet_mxid: str | None
    ) -> tuple[str, list[Any]]:
        """The pair's row; its arguments are a list so that a room change before the row is stored can go
        into it (an UPDATE in the same commit could run before the INSERT: the group commit groups
        statements by their text)."""
        return (
            "INSERT INTO vmn_allocation (vmn, phone, side, room_id, puppet_mxid, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [vmn, phone, side, room_id, puppet_mxid, _now()],
        )

    @classmethod
    def _claim(cls, vmn: str, phone: str, side: str, room_id: str | None, puppet_mxid: str | None) -> None:
        """The pair in memory (the phone's pairs read already)."""
        assert cls._by_phone is not None
        cls._by_phone.setdefault(phone, {})[vmn] = side
        cls._by_side[(side, phone)] = vmn
        if room_id is not None and puppet_mxid is not None:
            cls._rooms[(vmn, phone)] = (room_id, puppet_mxid)

    @classmethod
    def _stored(cls, vmn: str, phone: str) -> None:
        cls._unstored.pop((vmn, phone), None)

    @classmethod
    def _unclaim(cls, vmn: str, phone: str, side: str) -> None:
        """Take back a pair whose write was not stored (its appservice transaction failed)."""
        pairs = cls._by_phone.get(phone) if cls._by_phone is not None else None
        if pairs is not None and pairs.get(vmn) == side:
            del pairs[vmn]
        if cls._by_side.get((side, phone)) == vmn:
            del cls._by_side[(side, phone)]
        cls._rooms.pop((vmn, phone), None)
        cls._unstored.pop((vmn, phone), None)

    @classmethod
    async def assign(
        cls, vmn: str, phone: str, side: str, room_id: str | None = None, puppet_mxid: str | None = None
    ) -> bool:
        """Pair a number the side owns with ``phone``; False if another side already holds that pair."""
        async with cls._locks.setdefault(phone, asyncio.Lock()):
            holder = (await cls._pairs(phone)).get(vmn)
            if holder is None and (side, phone) not in cls._by_side:
                await cls._insert(vmn, phone, side, room_id, puppet_mxid)
                holder = (await cls._pairs(phone)).get(vmn)
            return holder == side

    @classmethod
    async def remember_room(cls, vmn: str, phone: str, room_id: str, puppet_mxid: str) -> None:
        """Where the pair last talked, so the reply lands in that room as that virtual user."""
        if cls._rooms.get((vmn, phone)) == (room_id, puppet_mxid):
            return
        unstored = cls._unstored.get((vmn, phone))
        if unstored is not None:  # the pair's row waits for its transaction's commit: it takes the room
            unstored[3:5] = [room_id, puppet_mxid]
            cls._rooms[(vmn, phone)] = (room_id, puppet_mxid)
            return
        await cls.writes.commit(
            [
                (
                    "UPDATE vmn_allocation SET room_id=$3, puppet_mxid=$4 WHERE vmn=$1 AND phone=$2",
                    (vmn, phone, room_id, puppet_mxid),
                )
            ]
        )
        cls._rooms[(vmn, phone)] = (room_id, puppet_mxid)

    @classmethod
    async def allocate(
        cls,
        side: str,
        phone: str,
        pool: list[str],
        room_id: str | None = None,
        puppet_mxid: str | None = None,
        pending: PendingWrites | None = None,
    ) -> str:
        """Sticky: the same pair always gets the same number; the first free pool number otherwise, stored
        with the room it is for (``room_id``, ``puppet_mxid``) so no second write follows.

        With ``pending`` (the appservice transaction whose text needs the number), the pair is written
        with that transaction's commit, where the text that leaves from it is stored too: it holds in
        memory from now on (the next transaction waits for this one) and is taken back if that commit
        fails."""
        existing = cls._by_side.get((side, phone))
        if existing is not None:
            return existing
        async with cls._locks.setdefault(phone, asyncio.Lock()):
            for vmn in pool:
                existing = await cls.for_side(side, phone)
                if existing is not None:
                    return existing
                if vmn in await cls._pairs(phone):
                    continue
                if pending is not None:
                    cls._claim(vmn, phone, side, room_id, puppet_mxid)
                    query, args = cls._insert_statement(vmn, phone, side, room_id, puppet_mxid)
                    cls._unstored[(vmn, phone)] = args
                    pending.add(
                        [(query, args)],
                        stored=partial(cls._stored, vmn, phone),
                        dropped=partial(cls._unclaim, vmn, phone, side),
                    )
                    return vmn
                if await cls._insert(vmn, phone, side, room_id, puppet_mxid):
                    return vmn
            existing = await cls.for_side(side, phone)
            if existing is not None:
                return existing
        raise PoolExhausted(f"all {len(pool)} pool numbers already talk to {phone} for other chats")


class OptOuts:
    """Phones that texted STOP: nothing is sent to them until they text START. Kept in memory too (checked
    for every outbound text; the list is small and only this process changes it)."""

    db: ClassVar[Database]
    _phones: ClassVar[set[str] | None] = None

    @classmethod
    def forget_all(cls) -> None:
        cls._phones = None

    @classmethod
    async def _load(cls) -> set[str]:
        if cls._phones is None:
            cls._phones = {row["phone"] for row in await cls.db.fetch("SELECT phone FROM sms_optout")}
        return cls._phones

    @classmethod
    async def add(cls, phone: str) -> None:
        phones = await cls._load()
        await cls.db.execute(
            "INSERT INTO sms_optout (phone, created_at) VALUES ($1, $2) ON CONFLICT (phone) DO NOTHING",
            phone,
            _now(),
        )
        phones.add(phone)

    @classmethod
    async def remove(cls, phone: str) -> None:
        phones = await cls._load()
        await cls.db.execute("DELETE FROM sms_optout WHERE phone=$1", phone)
        phones.discard(phone)

    @classmethod
    async def has(cls, phone: str) -> bool:
        return phone in await cls._load()
