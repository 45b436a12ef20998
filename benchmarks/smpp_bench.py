"""SMPP submit throughput at the ESME layer, against an SMSC on loopback.

    PYTHONPATH=. python benchmarks/smpp_bench.py [--parts 20000] [--json]

The SMSC runs in a child process so it does not share the measured event loop. By
default it is a header-only asyncio responder (so the ESME is what is measured);
``--smsc smpp34`` uses smpp34's Rust server, ``--smsc fake`` the tests' fake SMSC.
Rows, all measured in the same run:

- ``ours w64``      smpp.client.SmppClient, window 64 (the configuration under test)
- ``ours w1``       the same client, window 1 (baseline: synchronous submit)
- ``gateway w64``   the full smpp.gateway.Gateway path (in-memory outbox, routing,
                    per-conversation ordering over 256 conversations) on a window-64 bind,
                    closed loop with 64 messages between send() and "submitted"
- ``smpp34 w64``    smpp34.Client, window 64 (another library, for comparison)

With ``--json`` the last line is one JSON object with ``parts_per_s``, ``p99_ms`` and
``lost`` for the ``ours w64`` row, plus every row under ``rows``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from smpp import pdu as P
from smpp.client import SmppClient, SmscConfig
from smpp.gateway import Gateway, InboundMessage, InboundReceipt
from smpp.outbox import MemoryOutbox, OutboundMessage, OutboxState
from smpp.routing import Route, Target
from smpp.session import SessionConfig

try:
    import smpp34
except ImportError:  # pragma: no cover - optional comparison
    smpp34 = None  # type: ignore[assignment]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), NaN for none: the benchmarks' one percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    name: str
    parts: int
    seconds: float
    latencies: list[float]
    lost: int
    cpu: float = 0.0  # CPU seconds of this (ESME) process for the row

    @property
    def parts_per_s(self) -> float:
        return self.parts / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return pct(self.latencies, q) * 1000.0


# ---------------------------------------------------------------- SMSC child process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_smpp34(port: int) -> None:
    assert smpp34 is not None
    srv = smpp34.Server("127.0.0.1", port, system_id="bench")
    await srv.start()
    print("ready", flush=True)
    n = 0
    while True:
        ev = await srv.next()
        if isinstance(ev, smpp34.SubmitSmEvent):
            n += 1
            ev.accept(str(n))


class _RawSmsc(asyncio.Protocol):
    """Header-only SMSC: answers binds, submits, enquire_link and unbind as fast as it can,
    so that the ESME side is what the benchmark measures."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.n = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = bytearray()
        pos = 0
        hdr = P.HEADER
        while len(buf) - pos >= 16:
            length, cid, _status, seq = hdr.unpack_from(buf, pos)
            if len(buf) - pos < length:
                break
            pos += length
            if cid == P.CommandId.SUBMIT_SM:
                self.n += 1
                mid = b"%d\0" % self.n
                out += hdr.pack(16 + len(mid), 0x80000004, 0, seq) + mid
            elif cid in (1, 2, 9):
                out += hdr.pack(16 + 6, cid | 0x80000000, 0, seq) + b"bench\0"
            elif cid in (0x15, 6):
                out += hdr.pack(16, cid | 0x80000000, 0, seq)
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(bytes(out))


async def serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(_RawSmsc, "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_fake(port: int) -> None:
    from tests.smpp.fake_smsc import FakeSmsc

    f = FakeSmsc(password="bench")
    f.port = port
    await f.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def start_smsc(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", kind, "--port", str(port)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"SMSC {kind} did not start")
    return proc, port


# ---------------------------------------------------------------- measured clients


def config(port: int, window: int) -> SmscConfig:
    return SmscConfig(
        name="bench",
        host="127.0.0.1",
        port=port,
        session=SessionConfig(system_id="bench", password="bench", window=window, submit_timeout=30.0),
        reconnect_initial=0.1,
    )


async def _no_deliver(_c: SmppClient, _p: P.ShortMessage | P.DataSm) -> int:
    return 0


async def drive(
    n: int, concurrency: int, submit: Callable[[int], Awaitable[bool]], deadline: float
) -> tuple[float, list[float], int]:
    """Run *n* submits with at most *concurrency* awaiting at once; bounded by *deadline* seconds."""
    latencies: list[float] = []
    ok = 0
    next_i = 0
    perf = time.perf_counter
    start = perf()

    async def worker() -> None:
        nonlocal ok, next_i
        while next_i < n and perf() - start < deadline:
            i = next_i
            next_i += 1
            t0 = perf()
            if await submit(i):
                ok += 1
                latencies.append(perf() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return perf() - start, latencies, next_i - ok


async def bench_ours(port: int, n: int, window: int, deadline: float) -> Row:
    client = SmppClient(config(port, window), _no_deliver)
    await client.start()
    if not await client.wait_bound(10):
        raise RuntimeError("bind failed")
    text = b"benchmark message body, 40 chars long!!"

    async def submit(i: int) -> bool:
        pdu = P.ShortMessage(
            P.CommandId.SUBMIT_SM,
            source_addr="4930123",
            destination_addr=f"49151{i % 1000:07d}",
            short_message=text,
            registered_delivery=1,
        )
        try:
            await client.submit(pdu)
        except Exception:
            return False
        return True

    cpu0 = time.process_time()
    seconds, lat, lost = await drive(n, window, submit, deadline)
    cpu = time.process_time() - cpu0
    await client.stop()
    return Row(f"ours w{window}", len(lat), seconds, lat, lost, cpu)


class _NullSink:
    async def store_message(self, message: InboundMessage) -> None:
        pass

    async def store_receipt(self, receipt: InboundReceipt) -> None:
        pass


async def bench_gateway(port: int, n: int, window: int, deadline: float) -> Row:
    outbox = MemoryOutbox()
    gw = Gateway([config(port, window)], [Route("", (Target("bench"),))], outbox, _NullSink())
    await gw.start()
    if not await gw.wait_bound(10):
        raise RuntimeError("bind failed")
    start = time.perf_counter()
    cpu0 = time.process_time()
    enqueued: dict[str, float] = {}
    done: list[float] = []
    orig = outbox.mark_submitted

    async def mark_submitted(message_id: str) -> None:
        await orig(message_id)
        done.append(time.perf_counter() - enqueued[message_id])

    outbox.mark_submitted = mark_submitted  # type: ignore[method-assign]
    # Closed loop: at most `window` messages between send() and "submitted" at any time,
    # so the latency is event-to-ack under load, not the wait in a burst's queue.
    in_flight = asyncio.Semaphore(window)

    async def release_on_done(message_id: str) -> None:
        await mark_submitted(message_id)
        in_flight.release()

    outbox.mark_submitted = release_on_done  # type: ignore[method-assign]
    for i in range(n):
        if time.perf_counter() - start > deadline:
            break
        await in_flight.acquire()
        mid = str(i)
        enqueued[mid] = time.perf_counter()
        await gw.send(OutboundMessage(mid, "4930123", f"49151{i % 256:07d}", "benchmark message body"))
    try:
        await asyncio.wait_for(gw.wait_idle(), deadline)
    except TimeoutError:
        pass
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    await gw.stop()
    lost = sum(1 for m in outbox.messages.values() if m.state is not OutboxState.SUBMITTED)
    return Row(f"gateway w{window}", len(done), seconds, done, lost, cpu)


async def bench_smpp34(port: int, n: int, window: int, deadline: float) -> Row:
    assert smpp34 is not None
    client = smpp34.Client("127.0.0.1", port, "bench", "bench", bind_type="TRX", window_size=window)
    smsc = await client.connect()

    async def submit(i: int) -> bool:
        r = await smsc.submit_sm(
            f"49151{i % 1000:07d}", b"benchmark message body, 40 chars long!!", source_addr="4930123"
        )
        return bool(r.is_success)

    cpu0 = time.process_time()
    seconds, lat, lost = await drive(n, window, submit, deadline)
    cpu = time.process_time() - cpu0
    try:
        await smsc.unbind()
    finally:
        await client.stop()
    return Row(f"smpp34 w{window}", len(lat), seconds, lat, lost, cpu)


async def run(args: argparse.Namespace) -> list[Row]:
    kind = args.smsc
    if kind == "smpp34" and smpp34 is None:
        raise SystemExit("smpp34 is not installed")
    rows: list[Row] = []
    benches: list[tuple[Callable[[int, int, int, float], Awaitable[Row]], int, int]] = [
        (bench_ours, args.parts, 64),
        (bench_ours, max(200, args.parts // 20), 1),
        (bench_gateway, args.parts, 64),
    ]
    if smpp34 is not None:
        benches.append((bench_smpp34, args.parts, 64))
    for fn, n, window in benches:
        proc, port = start_smsc(kind)
        try:
            rows.append(await fn(port, n, window, args.deadline))
        finally:
            proc.terminate()
            proc.wait(5)
    print(f"SMSC: {kind} (child process), loopback; message parts of 40 GSM characters")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=20000, help="submits per row (window 1 row: 1/20)")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds each row may run at most")
    ap.add_argument(
        "--smsc",
        choices=["raw", "smpp34", "fake"],
        default="raw",
        help="raw: header-only asyncio SMSC (default, fastest); smpp34: its Rust server; fake: the tests' SMSC",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", choices=["raw", "smpp34", "fake"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        server = {"raw": serve_raw, "smpp34": serve_smpp34, "fake": serve_fake}[args.serve]
        asyncio.run(server(args.port))
        return
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    rows = asyncio.run(run(args))
    print(f"event loop: {loop_name}")
    print(
        f"{'row':<14} {'parts':>7} {'parts/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'CPU us/part':>12}"
    )
    for r in rows:
        us = r.cpu / r.parts * 1e6 if r.parts else float("nan")
        print(
            f"{r.name:<14} {r.parts:>7} {r.parts_per_s:>9.0f} {r.pct(0.5):>8.2f} {r.pct(0.99):>8.2f}"
            f" {r.lost:>5} {us:>12.1f}"
        )
    main_row = rows[0]
    base = rows[1]
    print(f"window 64 vs window 1: {main_row.parts_per_s / base.parts_per_s:.1f}x")
    if args.json:
        print(
            json.dumps(
                {
                    "parts_per_s": round(main_row.parts_per_s, 1),
                    "p99_ms": round(main_row.pct(0.99), 3),
                    "lost": main_row.lost,
                    "baseline_window1_parts_per_s": round(base.parts_per_s, 1),
                    "rows": {
                        r.name: {
                            "parts_per_s": round(r.parts_per_s, 1),
                            "p50_ms": round(r.pct(0.5), 3),
                            "p99_ms": round(r.pct(0.99), 3),
                            "lost": r.lost,
                            "cpu_us_per_part": round(r.cpu / r.parts * 1e6, 1) if r.parts else None,
                        }
                        for r in rows
                    },
                }
            )
        )


if __name__ == "__main__":
    main()
