"""Real Matrix peers for tests: a Synapse homeserver process, a telebridge process, and a small client.

Everything listens on 127.0.0.1 on free ports. The client is deliberately plain (urllib, JSON) and
speaks the client-server API the way Element does, so tests read like what a user does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

SERVER_NAME = "localhost"
SHARED_SECRET = "telebridge-test-shared-secret"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PeerExited(RuntimeError):
    """A peer process died while something waited for it: :func:`wait_until` stops at once."""


def wait_until(
    check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; bounded, never asserts on time itself."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except PeerExited:
            raise
        except Exception as e:  # a peer still starting up
            last_error = e
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(
        f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


class HttpError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def http(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        raise HttpError(e.code, parsed) from None
    return json.loads(raw) if raw else None


class PeerProcess:
    """A peer's process: its stderr appended to ``log``, up once ``health_url`` answers, stopped with SIGTERM
    (SIGKILL after 20 s) or killed outright. A process that exits while awaited fails the wait at once."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(
        self,
        args: Sequence[str | Path],
        *,
        cwd: Path,
        health_url: str,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start ``args`` and wait until ``health_url`` answers."""
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab")
        )
        wait_until(lambda: self._answers(health_url), timeout=timeout, what=f"{self.name} to answer")

    def _answers(self, health_url: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerExited(f"{self.name} exited: {self.log_text()[-3000:]}")
        http("GET", health_url, timeout=2)
        return True

    def kill(self) -> None:
        """SIGKILL: no chance to flush or unbind, as in a crash."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within 20 s; its exit status (None if not running)."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate and key for a TLS listener on loopback (peers here do not verify it)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def no_rate_limit(*scopes: str) -> dict[str, Any]:
    """A Synapse ``rc_*`` rate limit far above anything a test does; with ``scopes``, one such limit each."""
    if scopes:
        return {scope: no_rate_limit() for scope in scopes}
    return {"per_second": 1000, "burst_count": 1000}


class Synapse(PeerProcess):
    """A Synapse homeserver on SQLite in ``workdir``, loading our registration.

    With ``federation_port`` it also serves the federation API (``openid`` and ``federation`` resources)
    over TLS on that port, so that an identity server can check OpenID tokens and be told of binds. The
    server name must then be ``127.0.0.1:<federation_port>``: a server name with an IP literal and a port is
    reached directly (server discovery does no ``.well-known`` or SRV look-up), and federation is TLS only.
    """

    def __init__(
        self,
        workdir: Path,
        registration: Path,
        server_name: str = SERVER_NAME,
        federation_port: int | None = None,
    ) -> None:
        super().__init__("Synapse", workdir / "stderr.log")
        self.workdir = workdir
        self.registration = registration
        self.server_name = server_name
        self.federation_port = federation_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}},
            "log_config": str(self.workdir / "log.yaml"),
            "media_store_path": str(self.workdir / "media"),
            "registration_shared_secret": SHARED_SECRET,
            "report_stats": False,
            "signing_key_path": str(self.workdir / "signing.key"),
            "trusted_key_servers": [],
            "app_service_config_files": [str(self.registration)],
            "bcrypt_rounds": 4,
            "enable_registration": False,
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            # Synapse reuses an identical /sync answer for two minutes by default; tests poll /sync.
            "caches": {"sync_response_cache_duration": 0},
            "rc_message": no_rate_limit(),
            "rc_registration": no_rate_limit(),
            "rc_login": no_rate_limit("address", "account", "failed_attempts"),
            "rc_joins": no_rate_limit("local", "remote"),
            "rc_invites": no_rate_limit("per_room", "per_user", "per_issuer"),
            "rc_3pid_validation": no_rate_limit(),
            "rc_room_creation": no_rate_limit(),
        }
        log_config = {
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(self.workdir / "homeserver.log"),
                    "formatter": "f",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        if self.federation_port is not None:
            cert, key = self_signed_certificate(self.workdir)
            config["tls_certificate_path"] = str(cert)
            config["tls_private_key_path"] = str(key)
            config["listeners"].append(
                {
                    "port": self.federation_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["openid", "federation"], "compress": False}],
                }
            )
        (self.workdir / "media").mkdir(exist_ok=True)
        path = self.workdir / "homeserver.yaml"
        with path.open("w") as f:
            YAML().dump(config, f)
        with (self.workdir / "log.yaml").open("w") as f:
            YAML().dump(log_config, f)
        return path

    def start(self) -> None:
        path = self.write_config()
        base = [sys.executable, "-m", "synapse.app.homeserver", "-c", str(path)]
        subprocess.run([*base, "--generate-keys"], check=True, cwd=self.workdir, capture_output=True)
        self.spawn(base, cwd=self.workdir, health_url=self.url + "/_matrix/client/versions", timeout=60)

    def register(self, username: str, password: str = "password", admin: bool = False) -> Client:
        """Shared-secret admin registration (Synapse admin API), returns a logged-in client."""
        nonce = http("GET", self.url + "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [nonce.encode(), username.encode(), password.encode(), b"admin" if admin else b"notadmin"]
            )
        )
        body = {
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        resp = http("POST", self.url + "/_synapse/admin/v1/register", body)
        return Client(self.url, resp["user_id"], resp["access_token"])

    def new_user(self, name: str = "alice") -> Client:
        """Register a user no other test has: ``name`` and a random suffix."""
        return self.register(f"{name}{uuid.uuid4().hex[:8]}")

    def user(self, username: str, password: str = "password") -> Client:
        """Register ``username``, or log in if an earlier test already did."""
        try:
            return self.register(username, password)
        except HttpError as e:
            if e.status != 400:
                raise
        resp = http(
            "POST",
            self.url + "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": username},
                "password": password,
            },
        )
        return Client(self.url, resp["user_id"], resp["access_token"])


class Client:
    """The client-server API calls a test user makes (the same ones Element makes)."""

    def __init__(self, base: str, user_id: str, token: str) -> None:
        self.base = base
        self.user_id = user_id
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return http(method, self.base + path, body, self.token)

    def protocols(self) -> Any:
        return self.call("GET", "/_matrix/client/v3/thirdparty/protocols")

    def thirdparty_user(self, protocol: str, **fields: str) -> Any:
        query = urllib.parse.urlencode(fields)
        return self.call("GET", f"/_matrix/client/v3/thirdparty/user/{urllib.parse.quote(protocol)}?{query}")

    def create_dm(self, invitee: str) -> str:
        resp = self.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "trusted_private_chat", "is_direct": True, "invite": [invitee]},
        )
        return str(resp["room_id"])

    def create_group(self, invitees: list[str], name: str = "group") -> str:
        resp = self.call(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "private_chat", "name": name, "invite": invitees},
        )
        return str(resp["room_id"])

    def invite(self, room_id: str, user_id: str) -> None:
        self.call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": user_id})

    def kick(self, room_id: str, user_id: str, reason: str = "") -> None:
        self.call(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick", {"user_id": user_id, "reason": reason}
        )

    def send_text(self, room_id: str, text: str) -> str:
        txn = uuid.uuid4().hex
        resp = self.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": text},
        )
        return str(resp["event_id"])

    def send_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        txn = uuid.uuid4().hex
        resp = self.call("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/{event_type}/{txn}", content)
        return str(resp["event_id"])

    def first_invite(self) -> str | None:
        """A room this user is invited to (``/sync``), if any: how a bridge-made DM shows up."""
        sync = self.call("GET", "/_matrix/client/v3/sync?timeout=0")
        rooms = list(sync.get("rooms", {}).get("invite", {}))
        return rooms[0] if rooms else None

    def joined_members(self, room_id: str) -> set[str]:
        return set(self.call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")["joined"])

    def messages(self, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Events in the room, oldest first."""
        resp = self.call("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit={limit}")
        return list(reversed(resp["chunk"]))

    def profile(self, user_id: str) -> Any:
        return self.call("GET", f"/_matrix/client/v3/profile/{q(user_id)}")


def dm_with(client: Client, number: str) -> tuple[str, str]:
    """What Element's dial pad does: look the number up, open a DM with its virtual user, wait for the join."""
    user_id = client.thirdparty_user("m.protocol.pstn", **{"m.id.phone": number})[0]["userid"]
    room_id = client.create_dm(user_id)
    wait_until(lambda: user_id in client.joined_members(room_id), what=f"{user_id} to join the DM")
    return room_id, str(user_id)


def q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class BridgeProcess(PeerProcess):
    """``python -m telebridge`` as an operator runs it, with a config written for the test homeserver."""

    def __init__(
        self,
        workdir: Path,
        database: str,
        homeserver_url: str = "http://127.0.0.1:1",
        server_name: str = SERVER_NAME,
    ) -> None:
        super().__init__("the bridge", workdir / "bridge.log")
        self.workdir = workdir
        self.server_name = server_name
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = workdir / "config.yaml"
        self.registration = workdir / "registration.yaml"
        self.database = database
        self.homeserver_url = homeserver_url
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEBRIDGE_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "TELEBRIDGE_HOMESERVER__ADDRESS": self.homeserver_url,
                "TELEBRIDGE_HOMESERVER__DOMAIN": self.server_name,
                "TELEBRIDGE_APPSERVICE__ADDRESS": f"http://127.0.0.1:{self.port}",
                "TELEBRIDGE_APPSERVICE__PORT": str(self.port),
                "TELEBRIDGE_APPSERVICE__DATABASE": self.database,
                "TELEBRIDGE_METRICS__PORT": str(self.metrics_port),
                "TELEBRIDGE_LOGGING__LEVEL": "DEBUG",
                "TELEBRIDGE_BRIDGE__PERMISSIONS": '{"*": user, "@mallory:localhost": block, "@admin:localhost": admin}',
            }
        )
        env.update(self.extra_env)
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "telebridge", "-c", str(self.config), "-r", str(self.registration), *args],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def generate(self) -> dict[str, Any]:
        result = self.cli("-g")
        assert result.returncode == 0, result.stderr
        loaded: dict[str, Any] = YAML(typ="safe").load(self.registration.read_text())
        return loaded

    @property
    def hs_token(self) -> str:
        return str(YAML(typ="safe").load(self.registration.read_text())["hs_token"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn(
            [sys.executable, "-m", "telebridge", "-c", str(self.config), "-r", str(self.registration)],
            cwd=self.workdir,
            env=self.env(),
            health_url=self.url + "/_matrix/mau/live",
            timeout=30,
        )


@contextmanager
def bridged_homeserver(
    workdir: Path, extra_env: Mapping[str, str], *, federation: bool = False
) -> Iterator[tuple[Synapse, BridgeProcess]]:
    """A Synapse and a bridge (configured by ``extra_env``) that loads it: registration generated with the
    CLI, homeserver started on it, bridge started before any client asks for protocols.

    ``federation`` makes the homeserver reachable by other Matrix servers (an identity server checking the
    bridge's OpenID token): its server name becomes ``127.0.0.1:<port of its TLS federation listener>``.
    ``{server_name}`` in an ``extra_env`` value stands for the server name (for Matrix IDs in config)."""
    (workdir / "bridge").mkdir(parents=True, exist_ok=True)
    (workdir / "synapse").mkdir(parents=True, exist_ok=True)
    federation_port = free_port() if federation else None
    server_name = f"127.0.0.1:{federation_port}" if federation_port is not None else SERVER_NAME
    bridge = BridgeProcess(
        workdir / "bridge", database=f"sqlite:{workdir / 'bridge' / 'bridge.db'}", server_name=server_name
    )
    bridge.extra_env = {key: value.replace("{server_name}", server_name) for key, value in extra_env.items()}
    bridge.generate()
    synapse = Synapse(workdir / "synapse", bridge.registration, server_name, federation_port)
    synapse.start()
    bridge.homeserver_url = synapse.url
    try:
        bridge.start()
        yield synapse, bridge
    finally:
        bridge.stop()
        synapse.stop()
