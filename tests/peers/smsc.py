"""The npm ``smpp`` SMSC (tests/peers/smsc.js) driven from synchronous tests: a reader thread collects
the JSON lines it prints; commands go to its stdin."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smpp import gsm7
from tests.peers.matrix import wait_until

PEERS = Path(__file__).resolve().parent
Record = dict[str, Any]


class NpmSmsc:
    def __init__(self, system_id: str = "telebridge", password: str = "secret") -> None:
        node = shutil.which("node")
        if node is None or not (PEERS / "node_modules" / "smpp").is_dir():
            raise RuntimeError("node and tests/peers/node_modules (npm ci) are needed for the SMSC")
        self.system_id = system_id
        self.password = password
        self.proc = subprocess.Popen(
            [node, str(PEERS / "smsc.js"), "--system-id", system_id, "--password", password],
            cwd=PEERS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.port = int(wait_until(lambda: self.first("listening"), what="the SMSC to listen")["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.records.append(record)

    def events(self, kind: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.get("event") == kind]

    def first(self, kind: str) -> Record | None:
        found = self.events(kind)
        return found[0] if found else None

    def wait_for(self, check: Callable[[], Any], what: str) -> Any:
        return wait_until(check, what=what)

    def submits_to(self, destination: str) -> list[Record]:
        return [r for r in self.events("submit") if r.get("destination_addr") == destination]

    def wait_for_submits(self, destination: str, count: int = 1, what: str = "the submit") -> list[Record]:
        """Every submit to ``destination``, once there are at least ``count``."""
        return self.wait_for(
            lambda: len(self.submits_to(destination)) >= count and self.submits_to(destination), what=what
        )

    def smscs_setting(self, **options: object) -> str:
        """This SMSC as the bridge's ``sms.smscs`` setting, named ``npm``, with any further ``options``."""
        fields = {
            "name": "npm",
            "host": "127.0.0.1",
            "port": self.port,
            "system_id": self.system_id,
            "password": self.password,
            **options,
        }
        return "[{" + ", ".join(f"{key}: {value}" for key, value in fields.items()) + "}]"

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def deliver(self, source: str, destination: str, text: str) -> None:
        """A mobile-originated text in the GSM default alphabet (data_coding 0, one septet per octet as
        SMSCs send it over SMPP) or UCS-2 (8) when it does not fit, as a handset would."""
        if gsm7.is_gsm7(text):
            data_coding, payload = 0, gsm7.encode(text)
        else:
            data_coding, payload = 8, text.encode("utf-16-be")
        self.command(
            cmd="deliver",
            id=f"mo-{len(self.records)}",
            source_addr=source,
            destination_addr=destination,
            data_coding=data_coding,
            short_message_hex=payload.hex(),
        )

    def receipt(self, submit: Record, ident: str, stat: str, **fields: Any) -> None:
        """The phone's delivery receipt for ``submit``, with status ``stat`` (``DELIVRD``, ``UNDELIV``…)."""
        self.command(
            cmd="dlr",
            id=ident,
            message_id=submit["message_id"],
            stat=stat,
            source_addr=submit["destination_addr"],
            destination_addr=submit["source_addr"],
            **fields,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
