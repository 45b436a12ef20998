"""Running sipp (Debian `sip-tester`) as a peer on 127.0.0.1: free ports, bounded runs, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "scenarios"
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not installed")


def free_udp_port() -> int:
    """A UDP (and, usually, TCP) port free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SippRun:
    returncode: int
    stdout: str
    stderr: str
    errors: str

    def __str__(self) -> str:
        return (
            f"sipp rc={self.returncode}\n{self.stderr[-2000:]}\n{self.errors[-3000:]}\n{self.stdout[-1500:]}"
        )


class Sipp:
    """One sipp process; ``await sipp.wait()`` returns its SippRun (killed after ``limit`` seconds)."""

    def __init__(self, proc: asyncio.subprocess.Process, workdir: Path, limit: float) -> None:
        self.proc = proc
        self.workdir = workdir
        self.limit = limit

    async def wait(self) -> SippRun:
        try:
            async with asyncio.timeout(self.limit):
                out, err = await self.proc.communicate()
        except TimeoutError:
            self.proc.kill()
            out, err = await self.proc.communicate()
        errors = "".join(p.read_text(errors="replace") for p in self.workdir.glob("*errors.log"))
        errors += "".join(p.read_text(errors="replace")[-4000:] for p in self.workdir.glob("*messages.log"))
        rc = self.proc.returncode if self.proc.returncode is not None else -9
        return SippRun(rc, out.decode(errors="replace"), err.decode(errors="replace"), errors)


def _port_in_use(port: int, tcp: bool) -> bool:
    """Whether some socket holds 127.0.0.1:``port`` — read from /proc, so probing never races sipp's
    own bind (binding a probe socket could make sipp's bind fail)."""
    table = Path("/proc/net/tcp" if tcp else "/proc/net/udp")
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: assume bound and let the test's own timeouts judge
    suffix = f":{port:04X}"
    return any(line.split()[1].endswith(suffix) for line in lines if len(line.split()) > 1)


async def _until_bound(port: int, proc: asyncio.subprocess.Process, tcp: bool = False) -> None:
    """Wait (at most 5 s) until sipp holds its port, so nothing we send is lost to startup."""
    for _ in range(100):
        if proc.returncode is not None or _port_in_use(port, tcp):
            return
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sipp(
    workdir: Path,
    *args: str,
    port: int | None = None,
    limit: float = 60.0,
    trace: bool = True,
    tcp: bool = False,
) -> AsyncIterator[Sipp]:
    """Start sipp on 127.0.0.1 (``-p port``) with ``args``; always bounded by ``-timeout`` and ``limit``."""
    assert SIPP is not None
    port = port or free_udp_port()
    cmd = [SIPP, *args, "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-timeout", f"{int(limit) - 5}s"]
    cmd += ["-timeout_error"]
    if trace:
        cmd += ["-trace_err", "-trace_msg"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    runner = Sipp(proc, workdir, limit)
    try:
        await _until_bound(port, proc, tcp)
        yield runner
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
