"""Instructions per relayed packet, counted by valgrind's callgrind: less noisy than wall-clock figures.

Not exactly repeatable: how many datagrams each wake-up of the relay finds varies from run to run (and
each wake-up costs an epoll round), so the C pump's passthrough figure ranged 5,100-10,200 instructions
in five runs of one session (2026-11-23, night). Compare runs of the same session, several of each.

Run from the repository root (about a minute per mode; needs ``valgrind``)::

    PYTHONPATH=. python benchmarks/relay_callgrind.py --mode passthrough
    PYTHONPATH=. python benchmarks/relay_callgrind.py --mode transcode --calls 10
    PYTHONPATH=. python benchmarks/relay_callgrind.py --mode transcode-py --calls 10   # Python relay

The relay process of :mod:`benchmarks.media_bench` (same calls, same SRTP tap, uvloop) is started under
``valgrind --tool=callgrind``; this process drives it in lock step — one packet per call each way, then
wait until all of them came out — for ``--rounds`` rounds, twice: a short run and a long one. The
difference of the two runs' instruction totals, divided by the extra packets, is the relay's user-space
cost per packet with start-up and call set-up cancelled out. Kernel work (the UDP syscalls themselves) is
not counted by callgrind; wall-clock CPU per packet is what ``media_bench.py`` reports. Lock step means
every wake-up of the relay finds a batch of ``2 * calls`` datagrams waiting, as under heavy load.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import re
import select
import socket
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.media_bench import RTP, RelayProcess, _payloads, _srtp, _udp


def _valgrind_python(out_dir: str) -> str:
    """A wrapper that multiprocessing's spawn starts instead of the interpreter."""
    path = os.path.join(out_dir, "python-under-callgrind")
    with open(path, "w") as wrapper:
        wrapper.write(
            "#!/bin/sh\nexec valgrind --tool=callgrind --quiet "
            f'--callgrind-out-file={out_dir}/callgrind.out.%p {sys.executable} "$@"\n'
        )
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def _drive(mode: str, calls: int, rounds: int, out_dir: str) -> tuple[int, str]:
    """One relay under callgrind, ``rounds`` lock-step rounds; its total instruction count and file."""
    before = set(glob.glob(f"{out_dir}/callgrind.out.*"))
    relay = RelayProcess(None)
    web_sock, trunk_sock = _udp(), _udp()
    web_sock.setblocking(True)
    trunk_sock.setblocking(True)
    infos = relay.call(
        op="setup",
        mode=mode,
        calls=calls,
        gen_web=web_sock.getsockname(),
        gen_trunk=trunk_sock.getsockname(),
        complexity=5 if not mode.startswith("transcode") else _complexity,
    )
    web_payload, trunk_payload, web_pt, web_step = _payloads(mode.removesuffix("-py"))
    senders: list[tuple[Any, tuple[str, int], tuple[str, int], int]] = [
        (
            _srtp(info["rx_key"], inbound=False),
            ("127.0.0.1", info["web_port"]),
            ("127.0.0.1", info["trunk_port"]),
            i,
        )
        for i, info in enumerate(infos)
    ]
    for k in range(rounds):
        for tx, web_addr, trunk_addr, i in senders:
            ssrc = 0x10000 + i
            web_sock.sendto(
                tx.protect(
                    RTP.pack(0x80, web_pt, k, k * web_step, ssrc) + web_payload[(k + i) % len(web_payload)]
                ),
                web_addr,
            )
            trunk_sock.sendto(
                RTP.pack(0x80, 0, k, k * 160, ssrc) + trunk_payload[(k + i) % len(trunk_payload)], trunk_addr
            )
        expected = 2 * len(senders)
        deadline = time.monotonic() + 60
        while expected and time.monotonic() < deadline:
            ready, _, _ = select.select([web_sock, trunk_sock], [], [], 1.0)
            for sock in ready:
                sock.recv(2048)
                expected -= 1
        if expected:
            raise RuntimeError(f"round {k}: {expected} packets did not come back")
    relay.call(op="teardown")
    relay.stop()
    web_sock.close()
    trunk_sock.close()
    time.sleep(0.5)
    # Children forked on the way (ctypes.util.find_library runs ldconfig) leave small files of their own.
    counts = []
    for out in set(glob.glob(f"{out_dir}/callgrind.out.*")) - before:
        with open(out) as f:
            totals = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
        if totals is not None:
            counts.append((int(totals.group(1)), out))
    return max(counts)


def _self_costs(path: str) -> dict[str, int]:
    """Exclusive instruction count per function, from ``callgrind_annotate``."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", path], check=True, capture_output=True, text=True
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[.*\])?$", line)
        if match:
            name = match.group(2)
            costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


_complexity = 5


def main() -> None:
    global _complexity
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode",
        choices=["passthrough", "passthrough-py", "transcode", "transcode-py", "echo"],
        default="passthrough",
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100, help="extra rounds of the long run")
    parser.add_argument("--opus-complexity", type=int, default=None)
    parser.add_argument("--top", type=int, default=0, help="print the N costliest functions per packet")
    parser.add_argument(
        "--keep", help="keep callgrind output files in this directory (for callgrind_annotate)"
    )
    args = parser.parse_args()
    if args.opus_complexity is None:
        from media.call import MediaConfig

        args.opus_complexity = MediaConfig().opus_complexity
    _complexity = args.opus_complexity
    out_dir = args.keep or tempfile.mkdtemp(prefix="relay-callgrind-")
    os.makedirs(out_dir, exist_ok=True)
    multiprocessing.get_context("spawn").set_executable(_valgrind_python(out_dir))
    short, short_file = _drive(args.mode, args.calls, 10, out_dir)
    long, long_file = _drive(args.mode, args.calls, 10 + args.rounds, out_dir)
    packets = 2 * args.calls * args.rounds
    if args.top:
        before, after = _self_costs(short_file), _self_costs(long_file)
        diff = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        print("instructions per packet by function (exclusive, long run minus short run):")
        for name, cost in sorted(diff.items(), key=lambda item: -item[1])[: args.top]:
            print(f"{cost / packets:>10,.0f}  {name}")
    print(
        f"{args.mode}: {args.calls} calls, {args.rounds} rounds: "
        f"{(long - short) / packets:,.0f} instructions per relayed packet (user space)"
    )


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
