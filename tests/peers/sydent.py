"""matrix-sydent, the reference Matrix identity server, as a real peer for the identity-lookup tests.

Sydent pins its own Twisted/signedjson stack, so it lives in a venv of its own (``make sydent``, path in
``SYDENT_PYTHON``, default ``.venv-sydent/bin/python``) and runs as a separate process:
``python -m sydent.sydent`` with ``SYDENT_CONF`` pointing at an INI file written here. Everything it
opens listens on 127.0.0.1: the client API (what the bridge talks to), and the internal API, whose
``/_matrix/identity/internal/bind`` binds any phone number to any Matrix ID — the way a deployment
inserts associations it has verified out of band, and how the tests insert theirs.

What sydent needs from the homeserver: it checks the bridge's OpenID token by calling
``matrix://<server name>/_matrix/federation/v1/openid/userinfo``, always over TLS (its federation client
has no plain-HTTP mode), so the homeserver must be named ``127.0.0.1:<TLS port>`` and serve the
``openid`` resource there (``bridged_homeserver(..., federation=True)``). ``ip.whitelist`` lets it reach
127.0.0.1, which its default outbound blacklist of private ranges would refuse, and
``federation.verifycerts = false`` accepts the homeserver's throwaway certificate.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from configparser import ConfigParser
from pathlib import Path

import pytest

from tests.peers.matrix import REPO, HttpError, PeerProcess, free_port, http


def terms_url(version: str) -> str:
    """Where version ``version`` of the test identity server's privacy policy would be published."""
    return f"http://127.0.0.1/identity-terms-{version}.html"


def sydent_python() -> Path:
    """The interpreter of the venv sydent is installed in; skips (fails under CI) when there is none.

    A missing sydent venv on a developer machine only means ``make sydent`` has not run; in CI the
    Makefile installs it, so its absence there is a broken install step, not a reason to skip."""
    python = Path(os.environ.get("SYDENT_PYTHON", REPO / ".venv-sydent" / "bin" / "python"))
    probe = (
        subprocess.run([python, "-c", "import sydent.sydent"], capture_output=True, text=True, timeout=60)
        if python.exists()
        else None
    )
    if probe is not None and probe.returncode == 0:
        return python
    reason = (
        f"matrix-sydent is not importable with {python} ("
        + (probe.stderr.strip().splitlines()[-1] if probe is not None and probe.stderr else "no such file")
        + "): run `make sydent`"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class Sydent(PeerProcess):
    """One sydent process with its SQLite database and config in ``workdir``; restartable on the same
    ports, so state changes made while it is stopped (a new pepper) take effect as in production."""

    def __init__(self, workdir: Path, python: Path, *, terms: bool = True) -> None:
        super().__init__("sydent", workdir / "sydent.log")
        self.workdir = workdir
        self.python = python
        self.terms = terms
        self.port = free_port()
        self.internal_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.internal_url = f"http://127.0.0.1:{self.internal_port}"
        self.database = workdir / "sydent.db"
        self.config = workdir / "sydent.conf"
        self.terms_file = workdir / "terms.yaml"
        self._write_config()

    def publish_terms(self, version: str) -> None:
        """Make ``version`` of the privacy policy the one users must accept. Sydent reads its terms file on
        every request, so this takes effect at once: accounts that consented to another version get
        403 M_TERMS_NOT_SIGNED until they accept this one."""
        self.terms_file.write_text(
            f'master_version: "{version}"\n'
            "docs:\n"
            "  privacy_policy:\n"
            f'    version: "{version}"\n'
            "    langs:\n"
            f"      en: {{name: Privacy Policy, url: '{terms_url(version)}'}}\n"
        )

    def _write_config(self) -> None:
        config = ConfigParser()
        terms_path = ""
        if self.terms:
            terms_path = str(self.terms_file)
            self.publish_terms("1.0")
        config["general"] = {
            "server.name": "sydent.test",
            "pidfile.path": str(self.workdir / "sydent.pid"),
            "log.path": "",  # stderr, which goes to self.log
            "log.level": "INFO",
            "terms.path": terms_path,
            "templates.path": str(self.workdir / "templates"),  # no e-mail or SMS validation here
            "ip.whitelist": "127.0.0.1",
        }
        config["db"] = {"db.file": str(self.database)}
        config["http"] = {
            "clientapi.http.bind_address": "127.0.0.1",
            "clientapi.http.port": str(self.port),
            "internalapi.http.bind_address": "127.0.0.1",
            "internalapi.http.port": str(self.internal_port),
            # Replication only starts with a certificate; bind it to loopback all the same.
            "replication.https.bind_address": "127.0.0.1",
            "replication.https.port": str(free_port()),
            "federation.verifycerts": "false",
        }
        config["crypto"] = {"ed25519.signingkey": ""}  # sydent generates one and writes it back here
        with self.config.open("w") as f:
            config.write(f)

    def start(self) -> None:
        self.spawn(
            [self.python, "-m", "sydent.sydent"],
            cwd=self.workdir,
            env={**os.environ, "SYDENT_CONF": str(self.config)},
            health_url=self.url + "/_matrix/identity/v2",
            timeout=30,
        )

    def bind(self, number: str, mxid: str) -> dict[str, object]:
        """Bind an E.164 number to a Matrix ID through sydent's internal API; returns the signed association.

        MSISDNs are stored without the ``+``, as sydent's own SMS validation stores them."""
        try:
            association: dict[str, object] = http(
                "POST",
                self.internal_url + "/_matrix/identity/internal/bind",
                {"medium": "msisdn", "address": number.lstrip("+"), "mxid": mxid},
                timeout=10,
            )
        except HttpError as e:
            raise AssertionError(f"sydent refused the bind: {e}\n{self.log_text()[-2000:]}") from None
        return association

    def lookup_pepper(self) -> str:
        """The pepper sydent hashes its associations with (read from its database)."""
        with sqlite3.connect(self.database) as db:
            row = db.execute("SELECT lookup_pepper FROM hashing_metadata").fetchone()
        return str(row[0])

    def rotate_pepper(self) -> str:
        """Stop, drop the stored pepper, start: sydent then picks a new one and rehashes every
        association itself, as an operator rotating the pepper would have it do."""
        old = self.lookup_pepper()
        self.stop()
        with sqlite3.connect(self.database) as db:
            db.execute("DELETE FROM hashing_metadata")
        self.start()
        new = self.lookup_pepper()
        assert new != old, "sydent kept its pepper"
        return new

    def forget_access_tokens(self) -> None:
        """Restart sydent without the access tokens it issued, as after restoring an older backup: clients
        holding one get 401 M_UNAUTHORIZED and must register again. (Sydent keeps a write transaction open
        on its database while running, so the row delete has to happen while it is stopped.)"""
        self.stop()
        with sqlite3.connect(self.database) as db:
            db.execute("DELETE FROM tokens")
        self.start()

    def accounts(self) -> dict[str, str | None]:
        """Registered Matrix IDs and the terms version each has consented to."""
        with sqlite3.connect(self.database) as db:
            return dict(db.execute("SELECT user_id, consent_version FROM accounts").fetchall())

    def lookup_hashes(self) -> set[str]:
        """The hashes sydent answers v2 lookups from (its global associations, rehashed on a new pepper)."""
        with sqlite3.connect(self.database) as db:
            return {row[0] for row in db.execute("SELECT lookup_hash FROM global_threepid_associations")}

    def accepted_terms(self, user_id: str) -> set[str]:
        """The terms URLs ``user_id`` has accepted."""
        with sqlite3.connect(self.database) as db:
            rows = db.execute("SELECT url FROM accepted_terms_urls WHERE user_id = ?", (user_id,))
            return {row[0] for row in rows}
