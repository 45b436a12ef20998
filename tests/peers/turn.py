"""coturn (Debian ``coturn``), the TURN server most Matrix deployments run, on 127.0.0.1 for the tests.

Long-term credentials (RFC 8656 §9.2) for one static user; UDP only; ``--allow-loopback-peers`` because
every peer here is on 127.0.0.1, which coturn refuses to relay to by default.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.peers.matrix import free_port


class Coturn:
    username = "telebridge"
    password = "turn-secret"
    realm = "telebridge.test"

    def __init__(self, workdir: Path) -> None:
        if shutil.which("turnserver") is None:
            pytest.skip("coturn (Debian coturn) is not installed; CI installs it")
        self.port = free_port()
        relay = free_port()
        self.log = workdir / "turnserver.log"
        self.proc = subprocess.Popen(
            [
                "turnserver",
                *("-n", "--listening-ip=127.0.0.1", f"--listening-port={self.port}"),
                *("--relay-ip=127.0.0.1", f"--min-port={relay}", f"--max-port={relay + 50}"),
                *(f"--user={self.username}:{self.password}", f"--realm={self.realm}", "--lt-cred-mech"),
                *(
                    "--allow-loopback-peers",
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--fingerprint",
                    "--verbose",
                ),
                *(f"--log-file={self.log}", "--no-stdout-log", "--simple-log"),
                f"--userdb={workdir / 'turndb'}",
                f"--pidfile={workdir / 'turnserver.pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        """coturn answers a STUN Binding request once it listens (RFC 8489 §6)."""
        request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))  # Binding, no attributes
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"turnserver exited with {self.proc.returncode}")
                s.sendto(request, ("127.0.0.1", self.port))
                try:
                    s.recvfrom(2048)
                    return
                except OSError:
                    continue
        raise RuntimeError("turnserver did not answer")

    @property
    def ice_server(self) -> dict[str, str]:
        """As the bridge's ``calls.ice_servers`` takes it."""
        return {
            "urls": f"turn:127.0.0.1:{self.port}?transport=udp",
            "username": self.username,
            "credential": self.password,
        }

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
