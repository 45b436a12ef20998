"""The bridge's database: one class per table, schema upgrades in ``upgrade/``.

SQLite by default (aiosqlite), PostgreSQL via asyncpg; the same queries run on both.
"""

from __future__ import annotations

from mautrix.util.async_db import Database

from .calls import CallRecords
from .credit import Ledger
from .group_commit import GroupCommit
from .portal import Portal
from .puppet import Puppet
from .sms import InboundParts, OptOuts, SmsInbox, SmsOutbox, SmsReceipts, VmnAllocations
from .txn import TransactionLog
from .upgrade import upgrade_table

__all__ = [
    "CallRecords",
    "InboundParts",
    "Ledger",
    "OptOuts",
    "Portal",
    "Puppet",
    "SmsInbox",
    "SmsOutbox",
    "SmsReceipts",
    "TransactionLog",
    "VmnAllocations",
    "create_database",
    "init",
    "upgrade_table",
]


def create_database(url: str, min_size: int = 1, max_size: int = 10) -> Database:
    """A mautrix Database for ``url`` with our upgrade table; SQLite runs with synchronous=FULL because
    queued messages must survive power loss, not just a crash."""
    if url.startswith(("sqlite:", "sqlite3:")):
        # Several connections: WAL lets reads go on while the group commit writes.
        db_args: dict[str, object] = {
            "min_size": 4,
            "init_commands": ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"],
        }
    else:
        db_args = {"min_size": min_size, "max_size": max_size}
    return Database.create(url, upgrade_table=upgrade_table, db_args=db_args, owner_name="telebridge")


def init(db: Database) -> None:
    for table in (
        Portal,
        Puppet,
        TransactionLog,
        SmsOutbox,
        SmsInbox,
        SmsReceipts,
        VmnAllocations,
        OptOuts,
        InboundParts,
        CallRecords,
        Ledger,
    ):
        table.db = db
    writes = GroupCommit(db)  # one writer for the whole database: durable writes share commits
    TransactionLog.writes = writes
    SmsOutbox.writes = writes
    VmnAllocations.writes = writes
    Ledger.writes = writes
    Portal.forget_all()
    OptOuts.forget_all()
    VmnAllocations.forget_all()
    TransactionLog.forget_all()
    Ledger.forget_all()
