"""SIP call setups per second: sipp's built-in UAC (INVITE → 100 → 200 → ACK → BYE → 200) against our
UserAgent as UAS, on 127.0.0.1, our process pinned to one core with taskset and sipp to another.

Baseline, measured in the same run with the same sipp UAC and pinning: sipp's own built-in UAS (C++,
no transaction layer to speak of). Both UASs are offered the same rates; for each rate the table shows
achieved calls/s, successes and failures (sipp counts a call failed on any unexpected message,
retransmission timeout, or missing response).

    PYTHONPATH=. python benchmarks/sip_bench.py [--rates 500,1000,1500] [--seconds 5] [--json]

With ``--json`` the last line is one JSON object: ``cps`` (best achieved rate with 0 failures for our UA),
``failed`` (failures at that rate, i.e. 0, or the minimum seen if no rate was clean), per-rate details and
the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(port: int) -> None:
    """Our UAS: answer every call at once (the core has already sent 100 Trying)."""
    from sip.ua import Call, UserAgent
    from sip.useragent import UserAgentConfig

    def on_incoming(call: Call) -> None:
        call.answer(SDP)

    ua = UserAgent(UserAgentConfig("127.0.0.1", port), on_incoming=on_incoming)
    await ua.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await ua.close()


def run_sipp(uas_port: int, rate: int, seconds: float, cpu: str | None) -> dict[str, float]:
    """Run sipp's UAC at ``rate`` calls/s for ``seconds``; parse its final statistics."""
    calls = int(rate * seconds)
    sipp = shutil.which("sipp") or "sipp"
    cmd = [sipp, "-sn", "uac", f"127.0.0.1:{uas_port}", "-i", "127.0.0.1", "-p", str(free_port())]
    cmd += ["-r", str(rate), "-m", str(calls), "-d", "1", "-nostdin", "-timeout", f"{int(seconds * 4 + 40)}s"]
    cmd += ["-max_recv_loops", "10000", "-max_sched_loops", "10000"]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=seconds * 4 + 60)
        wall = time.monotonic() - started
    out = proc.stdout
    ok = _last_cumulative(out, "Successful call")
    failed = _last_cumulative(out, "Failed call")
    elapsed = _elapsed(out) or wall
    return {
        "offered": rate,
        "calls": calls,
        "successful": ok,
        "failed": failed,
        "elapsed_s": round(elapsed, 3),
        "cps": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "sipp_rc": proc.returncode,
    }


def _last_cumulative(text: str, label: str) -> int:
    values = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(values[-1]) if values else 0


def _elapsed(text: str) -> float | None:
    """Seconds from sipp's Start Time to its last Current Time (epoch columns of the final screen)."""
    start = re.findall(r"Start Time\s*\|[^|]*?(\d+\.\d+)\s*$", text, re.M)
    now = re.findall(r"Current Time\s*\|[^|]*?(\d+\.\d+)\s*$", text, re.M)
    if not start or not now:
        return None
    return float(now[-1]) - float(start[-1])


def start_uas(kind: str, port: int, cpu: str | None) -> subprocess.Popen[str]:
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    if kind == "ours":
        cmd = [*pin, sys.executable, __file__, "--serve", str(port)]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("our UAS did not start")
        return proc
    sipp = shutil.which("sipp") or "sipp"
    cmd = [*pin, sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-timeout", "600s"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, cwd=tempfile.gettempdir()
    )
    time.sleep(0.5)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="500,1000,1500,2000", help="offered call rates, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(serve(args.serve))
        return
    if shutil.which("sipp") is None:
        sys.exit("sipp (Debian sip-tester) is required")
    cores = os.cpu_count() or 1
    uas_cpu, uac_cpu = ("0", "1") if cores >= 2 and shutil.which("taskset") else (None, None)
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, list[dict[str, float]]] = {"ours": [], "sipp_uas": []}
    for kind in ("sipp_uas", "ours"):
        for rate in rates:
            port = free_port()
            uas = start_uas("ours" if kind == "ours" else "sipp", port, uas_cpu)
            try:
                results[kind].append(run_sipp(port, rate, args.seconds, uac_cpu))
            finally:
                stop(uas)
    print(
        f"SIP call setup, UAS pinned to cpu {uas_cpu}, sipp UAC to cpu {uac_cpu}, {args.seconds:g} s per rate"
    )
    print(f"{'UAS':<10} {'offered/s':>10} {'achieved/s':>11} {'ok':>7} {'failed':>7}")
    for kind, label in (("sipp_uas", "sipp uas"), ("ours", "telebridge")):
        for r in results[kind]:
            print(
                f"{label:<10} {r['offered']:>10.0f} {r['cps']:>11.1f} {r['successful']:>7.0f} {r['failed']:>7.0f}"
            )
    clean = [r for r in results["ours"] if r["failed"] == 0 and r["successful"] > 0]
    best = max(clean, key=lambda r: r["cps"]) if clean else min(results["ours"], key=lambda r: r["failed"])
    base_clean = [r for r in results["sipp_uas"] if r["failed"] == 0 and r["successful"] > 0]
    base = max(base_clean, key=lambda r: r["cps"]) if base_clean else None
    print(
        f"best clean rate for our UAS: {best['cps']:.1f} calls/s ({best['failed']:.0f} failed); "
        f"sipp uas baseline: {base['cps'] if base else 0:.1f} calls/s"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "cps": best["cps"],
                    "failed": int(best["failed"]),
                    "offered": best["offered"],
                    "baseline_sipp_uas_cps": base["cps"] if base else 0.0,
                    "runs": results,
                }
            )
        )


if __name__ == "__main__":
    main()
