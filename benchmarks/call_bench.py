"""Bridged call setup: the time the bridge adds between Matrix and the SIP trunk.

    PYTHONPATH=. python benchmarks/call_bench.py [--calls 40] [--concurrency 8] [--json]

Runs Synapse, ``python -m telebridge`` (calls on, one media worker) and ``sipp -sn uas`` as the trunk, all
on 127.0.0.1. A Matrix user places ``--calls`` calls from as many DMs, ``--concurrency`` at a time, each
with a fresh aiortc offer, as Element does (``m.call.invite`` through Synapse). The bridge logs, per call,
the time from receiving ``m.call.invite`` to handing the INVITE to the trunk (media leg included), and from
the trunk's 200 OK to sending ``m.call.answer``; this script reads them and prints p50/p99.

Baseline in the same run: the homeserver's own delivery time for the same events (client ``PUT /send``
returns → the bridge receives the transaction), so the bridge's share can be read against it.
With ``--json`` the last line is one JSON object with ``setup_p99_ms`` (invite phase), ``answer_p99_ms``,
``concurrent_calls`` (calls answered and up at once at the end) and ``loss`` (calls that did not connect).
Audio is not sent in this benchmark; ``media_bench.py`` measures the relay under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aioice.ice  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection  # noqa: E402

from tests.peers.matrix import BridgeProcess, Client, Synapse, free_port, wait_until  # noqa: E402

INVITE_RE = re.compile(r"Call (\S+): m\.call\.invite → INVITE in ([0-9.]+) ms")
ANSWER_RE = re.compile(r"Call (\S+): 200 OK → m\.call\.answer in ([0-9.]+) ms")
ANSWER_HS_RE = re.compile(r"m\.call\.answer in [0-9.]+ ms \(\+ ([0-9.]+) ms for the homeserver")
RECEIVED_RE = re.compile(r"^(\S+ \S+) .*m\.call\.invite.*")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def run(args: argparse.Namespace) -> dict[str, object]:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[assignment]
    work = Path(tempfile.mkdtemp(prefix="call-bench-"))
    trunk_port = free_port()
    (work / "bridge").mkdir()
    (work / "synapse").mkdir()
    bridge = BridgeProcess(work / "bridge", database=f"sqlite:{work / 'bridge.db'}")
    bridge.extra_env = {
        "TELEBRIDGE_LOGGING__LEVEL": "INFO",
        "TELEBRIDGE_CALLS__ENABLED": "true",
        "TELEBRIDGE_CALLS__SIP_PORT": str(free_port()),
        "TELEBRIDGE_CALLS__TRUNK": f"127.0.0.1:{trunk_port}",
        "TELEBRIDGE_CALLS__CALLER_ID": "+441632960001",
        "TELEBRIDGE_CALLS__MEDIA_WORKERS": "1",
        "TELEBRIDGE_CALLS__MAX_CALLS_PER_USER": str(args.calls + 1),
        "TELEBRIDGE_CALLS__MAX_CALLS": str(args.calls + 1),
    }
    bridge.generate()
    synapse = Synapse(work / "synapse", bridge.registration)
    synapse.start()
    bridge.homeserver_url = synapse.url
    bridge.start()
    sipp = subprocess.Popen(
        [
            *("sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(trunk_port), "-m", str(args.calls)),
            *("-timeout", "300s", "-nostdin", "-mi", "127.0.0.1", "-mp", "27000"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        alice: Client = synapse.register(f"bench{uuid.uuid4().hex[:6]}")
        rooms = []
        for i in range(args.calls):
            number = f"+1500555{i:04d}"
            user_id = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": number})[0]["userid"]
            rooms.append((alice.create_dm(user_id), user_id))
        for room_id, user_id in rooms:
            wait_until(lambda r=room_id, u=user_id: u in alice.joined_members(r), what="joins")
        started = time.time()
        sent_at = asyncio.run(place_calls(alice, rooms, args.concurrency))

        def answered() -> bool:
            return len(ANSWER_RE.findall(bridge.log_text())) >= args.calls

        try:
            wait_until(answered, timeout=120, interval=0.2, what="every call to be answered")
        except AssertionError:
            pass  # counted below as calls that did not connect
        elapsed = time.time() - started
        log = bridge.log_text()
        answer_ms = [float(ms) for _, ms in ANSWER_RE.findall(log)]
        return {
            "calls": args.calls,
            "seconds": round(elapsed, 2),
            "invite_ms": [float(ms) for _, ms in INVITE_RE.findall(log)],
            "answer_ms": answer_ms,
            "delivery_ms": homeserver_delivery(log, sent_at),
            "answer_hs_ms": [float(ms) for ms in ANSWER_HS_RE.findall(log)],
            "concurrent_calls": len(answer_ms),
            "loss": args.calls - len(answer_ms),
        }
    finally:
        sipp.kill()
        sipp.wait()
        bridge.stop()
        synapse.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


async def place_calls(alice: Client, rooms: list[tuple[str, str]], concurrency: int) -> dict[str, float]:
    """A fresh aiortc offer per call, then ``m.call.invite`` through Synapse, ``concurrency`` at a time."""
    offers = [await offer() for _ in rooms]
    sent_at: dict[str, float] = {}
    semaphore = asyncio.Semaphore(concurrency)

    async def place(i: int) -> None:
        call_id = f"bench{i}-{uuid.uuid4().hex[:6]}"
        content = {
            "call_id": call_id,
            "party_id": "bench",
            "version": "1",
            "lifetime": 60000,
            "offer": {"type": "offer", "sdp": offers[i]},
        }
        async with semaphore:
            await asyncio.to_thread(alice.send_event, rooms[i][0], "m.call.invite", content)
            sent_at[call_id] = time.time()

    await asyncio.gather(*(place(i) for i in range(len(rooms))))
    return sent_at


def homeserver_delivery(log: str, sent_at: dict[str, float]) -> list[float]:
    """Client ``PUT /send`` returned → the bridge logged the call (its receive time), per call."""
    out = []
    for line in log.splitlines():
        m = INVITE_RE.search(line)
        if not m or m.group(1) not in sent_at:
            continue
        stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        received = stamp - float(m.group(2)) / 1000
        out.append(max(0.0, (received - sent_at[m.group(1)]) * 1000))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs) for a look")
    args = ap.parse_args()
    r = run(args)
    rows = [
        ("m.call.invite → INVITE (bridge)", r["invite_ms"]),
        ("200 OK → m.call.answer (bridge)", r["answer_ms"]),
        ("PUT /send → bridge (homeserver, baseline)", r["delivery_ms"]),
        ("m.call.answer accepted (homeserver)", r["answer_hs_ms"]),
    ]
    print(f"{'phase':<44}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in rows:
        assert isinstance(values, list)
        p50 = statistics.median(values) if values else float("nan")
        print(f"{name:<44}{len(values):>5}{p50:>9.1f}{pct(values, 0.99):>9.1f}")
    print(
        f"calls answered and up at the end: {r['concurrent_calls']} of {r['calls']}; not connected: {r['loss']}"
    )
    if args.json:
        invite_ms, answer_ms = r["invite_ms"], r["answer_ms"]
        assert isinstance(invite_ms, list) and isinstance(answer_ms, list)
        print(
            json.dumps(
                {
                    "setup_p99_ms": round(pct(invite_ms, 0.99), 2),
                    "answer_p99_ms": round(pct(answer_ms, 0.99), 2),
                    "setup_p50_ms": round(statistics.median(invite_ms), 2) if invite_ms else None,
                    "concurrent_calls": r["concurrent_calls"],
                    "loss": r["loss"],
                }
            )
        )


if __name__ == "__main__":
    main()
