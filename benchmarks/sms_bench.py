"""SMS throughput through the whole bridge: appservice transactions → durable outbox → submit_sm →
submit_sm_resp → status stored, against an SMSC on loopback.

    PYTHONPATH=. python benchmarks/sms_bench.py [--messages 4000] [--json] [--credit]

The bridge runs as ``python -m telebridge`` in its own process, exactly as deployed, with SMS on and one
SMPP bind (window 64, or 1 for the baseline row) to the header-only SMSC of ``smpp_bench.py``. This process
plays the homeserver: it pushes ``m.room.message`` events into pre-created DM portals as appservice
transactions (50 events each, one transaction at a time, as Synapse does) and reads the outbox to see
when each message's submit_sm_resp was stored. Latency is per message, from the moment its transaction
was sent to the moment its "submitted" status was written (both on this machine's clock): ``updated_at`` is
stamped when that write is issued, after the SMSC's acceptance of the part has been committed; the status
itself commits with the next group commit.

Rows (same run): SQLite and PostgreSQL, window 64, as fast as the bridge takes them and at an offered 2000
messages/s (the latency goal is for that load); SQLite with window 1 as the baseline. ``--credit`` adds the
same two rows per database with prepaid credit on (every sender topped up through the provisioning API
first).
With ``--json`` the last line is one JSON object: ``parts_per_s``, ``p99_ms``, ``lost`` (SQLite, window 64)
and every row under ``rows``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import aiohttp  # noqa: E402
from smpp_bench import pct, start_smsc  # noqa: E402

from telebridge import db  # noqa: E402
from telebridge.puppet import VirtualUserNamespace  # noqa: E402
from tests.peers import postgres  # noqa: E402
from tests.peers.matrix import BridgeProcess  # noqa: E402

NAMESPACE = VirtualUserNamespace("_sip_", "localhost", "sip.example.org")
BATCH = 50
CONVERSATIONS = 200
CREDIT_SECRET = "bench-provisioning-secret"


@dataclass
class Row:
    name: str
    messages: int
    submitted: int
    seconds: float
    latencies_ms: list[float]
    push_seconds: float = 0.0

    @property
    def parts_per_s(self) -> float:
        return self.submitted / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return pct(self.latencies_ms, q)


async def seed_portals(url: str) -> list[tuple[str, str]]:
    """DM portals (room, sender) with one phone party each, written straight into the bridge's database."""
    database = db.create_database(url)
    db.init(database)
    await database.start()
    rooms = []
    try:
        for i in range(CONVERSATIONS):
            number = f"+4477009{i:05d}"
            puppet_id = NAMESPACE.user_id(number)
            puppet = await db.Puppet.get_or_create(puppet_id, number, "sip.example.org")
            await puppet.mark_registered(number)
            room = f"!bench{i}:localhost"
            portal = await db.Portal.create(room, "dm", f"@user{i}:localhost")
            await portal.add_party(puppet_id)
            rooms.append((room, f"@user{i}:localhost"))
    finally:
        await database.stop()
    return rooms


async def submitted_times(url: str) -> dict[str, int]:
    database = db.create_database(url)
    await database.start()
    try:
        rows = await database.fetch("SELECT event_id, updated_at FROM sms_outbox WHERE state='submitted'")
        return {r["event_id"]: r["updated_at"] for r in rows}
    finally:
        await database.stop()


async def count_submitted(url: str) -> int:
    database = db.create_database(url)
    await database.start()
    try:
        return int(await database.fetchval("SELECT COUNT(*) FROM sms_outbox WHERE state='submitted'") or 0)
    finally:
        await database.stop()


async def top_up(http: aiohttp.ClientSession, bridge_url: str, users: list[str]) -> None:
    """Credit for every sender, through the provisioning API as a payment system would add it."""
    headers = {"Authorization": f"Bearer {CREDIT_SECRET}"}
    for user in users:
        body = {"user_id": user, "amount": 10**9, "idempotency_key": f"bench-{user}"}
        async with http.post(
            f"{bridge_url}/_telebridge/provision/v1/topup", json=body, headers=headers
        ) as resp:
            resp.raise_for_status()


async def run_row(
    name: str,
    url: str,
    window: int,
    messages: int,
    deadline: float,
    rate: float = 0.0,
    credit: bool = False,
) -> Row:
    smsc, port = start_smsc("raw")
    workdir = Path(tempfile.mkdtemp(prefix="sms-bench-"))
    bridge = BridgeProcess(workdir, database=url)
    bridge.extra_env = {
        "TELEBRIDGE_LOGGING__LEVEL": "WARNING",
        "TELEBRIDGE_METRICS__ENABLED": "false",
        "TELEBRIDGE_SMS__ENABLED": "true",
        "TELEBRIDGE_SMS__VMN_POOL": '["+447700900001"]',
        "TELEBRIDGE_SMS__DELIVERY_RECEIPTS": "false",
        "TELEBRIDGE_SMS__SMSCS": (
            f"[{{name: bench, host: 127.0.0.1, port: {port}, system_id: bench, password: bench, window: {window}}}]"
        ),
        "TELEBRIDGE_SMS__ROUTES": '[{prefix: "", smscs: [bench]}]',
    }
    if credit:  # prepaid: each text is reserved before it is stored and settled once submitted
        bridge.extra_env |= {
            "TELEBRIDGE_CREDIT__ENABLED": "true",
            "TELEBRIDGE_CREDIT__PROVISIONING_SECRET": CREDIT_SECRET,
            "TELEBRIDGE_CREDIT__RATES": '[{prefix: "", sms: 3, call_minute: 10, increments: [60, 60]}]',
        }
    try:
        bridge.generate()
        bridge.start()  # creates the schema
        rooms = await seed_portals(url)
        sent_at: dict[str, float] = {}
        headers = {"Authorization": f"Bearer {bridge.hs_token}"}
        started = time.time()
        async with aiohttp.ClientSession() as http:
            if credit:
                await top_up(http, bridge.url, [sender for _, sender in rooms])
                started = time.time()
            for first in range(0, messages, BATCH):
                if rate:  # offered load: one transaction every BATCH/rate seconds
                    ahead = started + first / rate - time.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                events: list[dict[str, Any]] = []
                for i in range(first, min(first + BATCH, messages)):
                    room, sender = rooms[i % len(rooms)]
                    event_id = f"$bench{i}-{uuid.uuid4().hex[:6]}"
                    events.append(
                        {
                            "type": "m.room.message",
                            "room_id": room,
                            "sender": sender,
                            "event_id": event_id,
                            "origin_server_ts": int(time.time() * 1000),
                            "content": {"msgtype": "m.text", "body": f"benchmark message {i}"},
                        }
                    )
                now = time.time()
                for e in events:
                    sent_at[e["event_id"]] = now
                url_txn = f"{bridge.url}/_matrix/app/v1/transactions/bench-{first}-{uuid.uuid4().hex[:6]}"
                async with http.put(url_txn, json={"events": events}, headers=headers) as resp:
                    resp.raise_for_status()
        pushed = time.time() - started
        while time.time() - started < deadline and await count_submitted(url) < messages:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # polling another process's database: there is no event to wait on
        done = await submitted_times(url)
        latencies = [done[e] - sent_at[e] * 1000 for e in sent_at if e in done]
        last = max(done.values()) / 1000 if done else time.time()
        return Row(name, messages, len(done), last - started, latencies, pushed)
    finally:
        bridge.stop()
        smsc.kill()
        smsc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def run_rows(args: argparse.Namespace) -> list[Row]:
    """The rows in order: SQLite first (the JSON's headline row is the first, the baseline the third)."""
    n, deadline = args.messages, args.deadline
    # (name, window, messages, offered rate or 0 for as fast as acknowledged, credit on)
    sqlite_rows = [
        ("sqlite w64", 64, n, 0.0, False),
        ("sqlite w64 @2000/s", 64, n, 2000.0, False),
        ("sqlite w1 (baseline)", 1, max(200, n // 10), 0.0, False),
    ]
    postgres_rows = [("postgres w64", 64, n, 0.0, False), ("postgres w64 @2000/s", 64, n, 2000.0, False)]
    if args.credit:
        sqlite_rows += [
            ("sqlite w64 credit", 64, n, 0.0, True),
            ("sqlite credit @2000/s", 64, n, 2000.0, True),
        ]
        postgres_rows += [
            ("postgres w64 credit", 64, n, 0.0, True),
            ("postgres credit @2000/s", 64, n, 2000.0, True),
        ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, window, messages, rate, credit) in enumerate(sqlite_rows):
            url = f"sqlite:{tmp}/{i}.db"
            rows.append(asyncio.run(run_row(name, url, window, messages, deadline, rate, credit)))
    if postgres.available():
        for name, window, messages, rate, credit in postgres_rows:
            with postgres.fresh_database() as url:
                rows.append(asyncio.run(run_row(name, url, window, messages, deadline, rate, credit)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=4000, help="messages per row (baseline row: 1/10)")
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds each row may run at most")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--credit",
        action="store_true",
        help="also rows with prepaid credit on (a hold and a settlement per text)",
    )
    args = ap.parse_args()
    rows = run_rows(args)
    print(f"{'row':<24}{'msgs':>7}{'done':>7}{'parts/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'push s':>8}")
    for r in rows:
        p50 = statistics.median(r.latencies_ms) if r.latencies_ms else float("nan")
        print(
            f"{r.name:<24}{r.messages:>7}{r.submitted:>7}{r.parts_per_s:>10.0f}{p50:>9.1f}{r.pct(0.99):>9.1f}"
            f"{r.push_seconds:>8.2f}"
        )
    base = rows[2].parts_per_s or 1.0
    print(f"window 64 vs window 1 (SQLite): {rows[0].parts_per_s / base:.1f}x")
    if args.json:
        main_row = rows[0]
        print(
            json.dumps(
                {
                    "parts_per_s": round(main_row.parts_per_s, 1),
                    "p99_ms": round(main_row.pct(0.99), 2),
                    "lost": main_row.messages - main_row.submitted,
                    "rows": [
                        {
                            "name": r.name,
                            "parts_per_s": round(r.parts_per_s, 1),
                            "p99_ms": round(r.pct(0.99), 2),
                            "lost": r.messages - r.submitted,
                        }
                        for r in rows
                    ],
                }
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    main()
