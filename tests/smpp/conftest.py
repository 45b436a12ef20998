"""Peers for the smpp tests: the npm `smpp` SMSC (tests/peers/smsc.js), on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

PEERS = Path(__file__).resolve().parent.parent / "peers"
Record = dict[str, Any]


class NpmSmsc:
    """The npm SMSC as a child process: JSON lines out (what it saw), JSON lines in (commands)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0
        self.records: list[Record] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self.records.append(rec)
            self._changed.set()

    def events(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.get("event") == kind]

    async def wait_for(self, pred: Callable[[list[Record]], bool], within: float = 10.0) -> None:
        async def _loop() -> None:
            while not pred(self.records):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_loop(), within)

    async def wait_count(self, kind: str, n: int, within: float = 10.0) -> list[Record]:
        await self.wait_for(lambda _: len(self.events(kind)) >= n, within)
        return self.events(kind)

    async def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def npm_smsc() -> AsyncIterator[NpmSmsc]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs it)")
    if not (PEERS / "node_modules" / "smpp").is_dir():
        pytest.skip("npm smpp package not installed in tests/peers (CI runs npm ci)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(PEERS / "smsc.js"),
        "--system-id",
        "esme",
        "--password",
        "secret",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(PEERS),
    )
    smsc = NpmSmsc(proc)
    try:
        await smsc.wait_count("listening", 1)
        smsc.port = smsc.events("listening")[0]["port"]
        yield smsc
    finally:
        await smsc.close()
