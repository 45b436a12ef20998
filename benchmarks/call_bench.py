"""Bridged calls on one machine: the time the bridge adds to call setup, and how many calls it carries
with audio flowing.

    PYTHONPATH=. python benchmarks/call_bench.py [--calls 250] [--step 50] [--seconds 5] [--json]

Runs Synapse, ``python -m telebridge`` (calls on, one media worker) and ``sipp -sn uas -rtp_echo`` as the
trunk, all on 127.0.0.1. A Matrix user opens ``--calls`` DMs with phone numbers' virtual users, then
places calls in steps of ``--step``, eight setups at a time, as Element does: a WebRTC offer in
``m.call.invite`` through Synapse, the bridge's ``m.call.answer`` read from ``/sync``,
``m.call.select_answer``, ICE and DTLS with the bridge. Each caller is a :class:`LightCaller`
(``benchmarks/light_caller.py``): real ICE/DTLS-SRTP, 20 ms PCMU packets carrying a counter and a send
time. After each step every call up sends audio for ``--seconds``; sipp echoes it, so a packet that
comes back has crossed the bridge twice. A step passes when every call connected and not one packet of
the window was lost. The ramp stops at the first step that fails.

Setup latency: the bridge logs, per call, the time from receiving ``m.call.invite`` to handing the
INVITE to the trunk (media leg included), and from the trunk's 200 OK to sending ``m.call.answer``; the
later steps measure it with the earlier calls' audio flowing. Baseline in the same run: the homeserver's
own delivery time for the same events (client ``PUT /send`` returned → the bridge received it). The
bridge sets a call up on a spare call its media worker bound ahead of need (``calls.media_spare_calls``,
default 16, see ``media/spares.py``); a setup that finds none ready waits for the next one (or binds its
own through the worker) and the bridge logs it: ``setups_without_spare`` counts them.

With ``--json`` the last line is one JSON object with ``setup_p99_ms`` (invite phase), ``answer_p99_ms``,
``concurrent_calls`` (the largest step with every call up and 0 packets lost), ``loss`` (the fraction of
audio packets lost at that step) and ``steps`` (every step's figures).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from benchmarks.light_caller import LightCaller  # noqa: E402
from benchmarks.smpp_bench import pct  # noqa: E402
from media.webrtc import WebRtcState  # noqa: E402
from tests.peers.matrix import BridgeProcess, Client, HttpError, Synapse, free_port, wait_until  # noqa: E402
from tests.telebridge.calling import free_even_port  # noqa: E402

INVITE_RE = re.compile(r"Call (\S+): m\.call\.invite → INVITE in ([0-9.]+) ms")
MEDIA_RE = re.compile(r"m\.call\.invite → INVITE in [0-9.]+ ms \(media leg ([0-9.]+) ms\)")
ANSWER_RE = re.compile(r"Call (\S+): 200 OK → m\.call\.answer in ([0-9.]+) ms")
NO_SPARE_RE = re.compile(r"no spare call ready in media worker")
ANSWER_HS_RE = re.compile(r"m\.call\.answer in [0-9.]+ ms \(\+ ([0-9.]+) ms for the homeserver")
SETUPS_AT_ONCE = 8
SYNC_FILTER = json.dumps(
    {
        "room": {"timeline": {"types": ["m.call.answer"], "limit": 200}, "state": {"types": []}},
        "presence": {"types": []},
        "account_data": {"types": []},
    }
)


class AnswerWatcher:
    """The caller's ``/sync`` loop (as Element runs one), handing each ``m.call.answer`` to its call."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.early: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.since = self._sync(None, 0)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expect(self, call_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        with self.lock:
            if call_id in self.early:
                future.set_result(self.early.pop(call_id))
            else:
                self.waiting[call_id] = future
        return future

    def _sync(self, since: str | None, timeout_ms: int) -> str:
        query = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if since:
            query["since"] = since
        resp = self.client.call("GET", "/_matrix/client/v3/sync?" + urllib.parse.urlencode(query))
        for room in resp.get("rooms", {}).get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                if event.get("type") == "m.call.answer" and event.get("sender") != self.client.user_id:
                    self._deliver(event["content"])
        return str(resp["next_batch"])

    def _deliver(self, content: dict[str, Any]) -> None:
        call_id = str(content.get("call_id"))
        with self.lock:
            future = self.waiting.pop(call_id, None)
            if future is None:
                self.early[call_id] = content
                return
        self.loop.call_soon_threadsafe(lambda: future.done() or future.set_result(content))

    def _run(self) -> None:
        since = self.since
        while not self.stopped.is_set():
            try:
                since = self._sync(since, 1000)
            except (HttpError, OSError):
                time.sleep(0.2)

    def stop(self) -> None:
        self.stopped.set()


@dataclass
class Step:
    calls: int
    failed: int = 0
    sent: int = 0
    lost: int = 0
    rtt_ms: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.lost == 0 and self.sent > 0


class Load:
    """Places the calls and keeps their audio flowing: every caller sends a packet each 20 ms, the callers
    spread over the period in ten groups so the packets do not leave in one burst."""

    def __init__(self, alice: Client, rooms: list[tuple[str, str]], watcher: AnswerWatcher) -> None:
        self.alice = alice
        self.rooms = rooms
        self.watcher = watcher
        self.up: list[LightCaller] = []
        self.failures: list[str] = []
        self.sent_at: dict[str, float] = {}
        self._sender: asyncio.Task[None] | None = None

    async def place(self, index: int, gate: asyncio.Semaphore) -> None:
        room_id, _phone = self.rooms[index]
        caller = LightCaller()
        call_id = f"load{index}-{uuid.uuid4().hex[:6]}"
        try:
            async with gate:
                offer = await caller.offer()
                answered = self.watcher.expect(call_id)
                await asyncio.to_thread(
                    self.alice.send_event,
                    room_id,
                    "m.call.invite",
                    {
                        "call_id": call_id,
                        "party_id": "load",
                        "version": "1",
                        "lifetime": 60000,
                        "offer": {"type": "offer", "sdp": offer},
                    },
                )
                self.sent_at[call_id] = time.time()
                content = await asyncio.wait_for(answered, 60)
            caller.answered(content["answer"]["sdp"])
            select = {"call_id": call_id, "party_id": "load", "version": "1"}
            select["selected_party_id"] = content.get("party_id")
            await asyncio.to_thread(self.alice.send_event, room_id, "m.call.select_answer", select)
            await asyncio.wait_for(caller.leg.connected.wait(), 30)
            if caller.leg.state is not WebRtcState.CONNECTED:
                raise ConnectionError(caller.leg.close_reason or "not connected")
        except (TimeoutError, ConnectionError, HttpError, KeyError) as exc:
            self.failures.append(f"{call_id}: {exc!r}")
            await caller.close()
            return
        self.up.append(caller)

    async def send_audio(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            group = tick % 10
            for caller in self.up[group::10]:
                caller.send()
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.002 - loop.time()))

    async def ramp(self, total: int, step: int, seconds: float, report: Any) -> list[Step]:
        self._sender = asyncio.create_task(self.send_audio())
        steps: list[Step] = []
        gate = asyncio.Semaphore(SETUPS_AT_ONCE)
        placed = 0
        try:
            while placed < total:
                target = min(total, placed + step)
                failed_before = len(self.failures)
                await asyncio.gather(*(self.place(i, gate) for i in range(placed, target)))
                placed = target
                await asyncio.sleep(1.0)  # every new call's first packets are through
                row = await self.measure(len(self.up), seconds)
                row.failed = len(self.failures) - failed_before
                steps.append(row)
                report(row)
                if not row.passed:
                    break
        finally:
            self._sender.cancel()
            await asyncio.gather(*(c.close() for c in self.up), return_exceptions=True)
        return steps

    async def measure(self, calls: int, seconds: float) -> Step:
        callers = list(self.up)
        first = {id(c): c.sent for c in callers}
        await asyncio.sleep(seconds)
        last = {id(c): c.sent for c in callers}
        await asyncio.sleep(0.5)  # the window's last packets are still on their way back
        row = Step(calls)
        for c in callers:
            a, b = first[id(c)], last[id(c)]
            row.sent += b - a
            row.lost += c.lost_between(a, b)
            row.rtt_ms.extend(c.returned[n] * 1000 for n in range(a, b) if n in c.returned)
        return row


def open_dms(alice: Client, count: int) -> list[tuple[str, str]]:
    """What Element's dial pad does, ``count`` times: look a number up, open a DM, wait for the join."""

    def one(i: int) -> tuple[str, str]:
        number = f"+1500555{i:04d}"
        user_id = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": number})[0]["userid"]
        room_id = alice.create_dm(user_id)
        wait_until(lambda: user_id in alice.joined_members(room_id), what="joins", timeout=60)
        return room_id, str(user_id)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def run(args: argparse.Namespace) -> dict[str, Any]:
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
            *("sipp", "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", str(trunk_port)),
            *("-m", str(args.calls), "-timeout", "1800s", "-nostdin"),
            *("-mi", "127.0.0.1", "-mp", str(free_even_port())),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        alice: Client = synapse.register(f"bench{uuid.uuid4().hex[:6]}")
        rooms = open_dms(alice, args.calls)
        started = time.time()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            steps, sent_at = runner.run(load(alice, rooms, args))
        elapsed = time.time() - started
        log = bridge.log_text()
        return {
            "calls": args.calls,
            "seconds": round(elapsed, 2),
            "steps": steps,
            "invite_ms": [float(ms) for _, ms in INVITE_RE.findall(log)],
            "invite_pairs": [(call_id, float(ms)) for call_id, ms in INVITE_RE.findall(log)],
            "answer_ms": [float(ms) for _, ms in ANSWER_RE.findall(log)],
            "media_ms": [float(ms) for ms in MEDIA_RE.findall(log)],
            "delivery_ms": homeserver_delivery(log, sent_at),
            "answer_hs_ms": [float(ms) for ms in ANSWER_HS_RE.findall(log)],
            "without_spare": len(NO_SPARE_RE.findall(log)),
        }
    finally:
        sipp.kill()
        sipp.wait()
        bridge.stop()
        synapse.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


async def load(
    alice: Client, rooms: list[tuple[str, str]], args: argparse.Namespace
) -> tuple[list[Step], dict[str, float]]:
    watcher = AnswerWatcher(alice, asyncio.get_running_loop())
    runner = Load(alice, rooms, watcher)
    try:
        steps = await runner.ramp(args.calls, args.step, args.seconds, print_step)
    finally:
        watcher.stop()
    for failure in runner.failures[:5]:
        print(f"  failed: {failure}")
    return steps, runner.sent_at


def print_step(row: Step) -> None:
    if not hasattr(print_step, "header"):
        print(f"{'calls up':>9}{'failed':>8}{'packets':>10}{'lost':>7}{'rtt p50':>9}{'rtt p99':>9}  pass")
        print_step.header = True  # type: ignore[attr-defined]
    p50 = statistics.median(row.rtt_ms) if row.rtt_ms else float("nan")
    print(
        f"{row.calls:>9}{row.failed:>8}{row.sent:>10}{row.lost:>7}{p50:>9.2f}{pct(row.rtt_ms, 0.99):>9.2f}"
        f"  {'yes' if row.passed else 'no'}",
        flush=True,
    )


def setup_by_step(pairs: list[tuple[str, float]], step: int) -> dict[int, list[float]]:
    """Invite-phase latencies grouped by how many calls were already up (call ``loadN`` was placed in
    step ``N // step``, after the earlier steps' calls)."""
    out: dict[int, list[float]] = {}
    for call_id, ms in pairs:
        m = re.match(r"load(\d+)-", call_id)
        if m:
            out.setdefault(int(m.group(1)) // step * step, []).append(ms)
    return out


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
    ap.add_argument("--calls", type=int, default=250, help="the most calls to place")
    ap.add_argument("--step", type=int, default=50, help="calls added per step")
    ap.add_argument("--seconds", type=float, default=5.0, help="audio measured per step")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (logs) for a look")
    args = ap.parse_args()
    print("calls with audio (PCMU both ways, echoed by the trunk), added in steps:")
    r = run(args)
    rows = [
        ("m.call.invite → INVITE (bridge)", r["invite_ms"]),
        ("  of which the media leg", r["media_ms"]),
        ("200 OK → m.call.answer (bridge)", r["answer_ms"]),
        ("PUT /send → bridge (homeserver, baseline)", r["delivery_ms"]),
        ("m.call.answer accepted (homeserver)", r["answer_hs_ms"]),
    ]
    print(f"\n{'setup phase':<44}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in rows:
        p50 = statistics.median(values) if values else float("nan")
        print(f"{name:<44}{len(values):>5}{p50:>9.1f}{pct(values, 0.99):>9.1f}")
    steps: list[Step] = r["steps"]
    by_step = setup_by_step(r["invite_pairs"], args.step)
    # A step's calls start talking as each connects, so its later setups share the worker with them too.
    print(f"\n{'invite → INVITE, step placed with':<44}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}")
    for audio_calls, values in sorted(by_step.items()):
        name = f"  {audio_calls} earlier calls talking"
        print(f"{name:<44}{len(values):>5}{statistics.median(values):>9.1f}{pct(values, 0.99):>9.1f}")
    passed = [s for s in steps if s.passed]
    best = passed[-1] if passed else None
    print(f"setups that found no spare call ready (waited for one): {r['without_spare']}")
    print(f"most concurrent calls with audio and no loss: {best.calls if best else 0}")
    if args.json:
        invite_ms, answer_ms = r["invite_ms"], r["answer_ms"]
        print(
            json.dumps(
                {
                    "setup_p99_ms": round(pct(invite_ms, 0.99), 2),
                    "setup_p50_ms": round(statistics.median(invite_ms), 2) if invite_ms else None,
                    "answer_p99_ms": round(pct(answer_ms, 0.99), 2),
                    "answer_p50_ms": round(statistics.median(answer_ms), 2) if answer_ms else None,
                    "setups_without_spare": r["without_spare"],
                    "homeserver_delivery_p99_ms": round(pct(r["delivery_ms"], 0.99), 2),
                    "concurrent_calls": best.calls if best else 0,
                    "loss": round(best.lost / best.sent, 6) if best else 1.0,
                    "setup_p99_ms_by_calls_up": {
                        str(k): round(pct(v, 0.99), 2) for k, v in sorted(by_step.items())
                    },
                    "steps": [
                        {
                            "calls": s.calls,
                            "failed": s.failed,
                            "packets": s.sent,
                            "lost": s.lost,
                            "rtt_p99_ms": round(pct(s.rtt_ms, 0.99), 2),
                        }
                        for s in steps
                    ],
                }
            )
        )


if __name__ == "__main__":
    main()
