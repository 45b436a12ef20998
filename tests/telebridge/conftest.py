"""Fixtures for the bridge's own tests: databases on both backends, a real Synapse, the bridge process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.peers import postgres
from tests.peers.matrix import BridgeProcess, Synapse
from tests.peers.smsc import NpmSmsc

BACKENDS = ["sqlite", "postgres"]


def _require_postgres() -> None:
    if not postgres.available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (CI starts it; start it locally)")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'bridge.db'}"
    else:
        _require_postgres()
        with postgres.fresh_database() as url:
            yield url


@pytest.fixture(scope="session")
def bridge_process(tmp_path_factory: pytest.TempPathFactory) -> BridgeProcess:
    """Config and registration generated with the CLI, as an operator would."""
    workdir = tmp_path_factory.mktemp("bridge")
    proc = BridgeProcess(workdir, database=f"sqlite:{workdir / 'bridge.db'}")
    proc.generate()
    return proc


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory, bridge_process: BridgeProcess) -> Iterator[Synapse]:
    hs = Synapse(tmp_path_factory.mktemp("synapse"), bridge_process.registration)
    hs.start()
    bridge_process.homeserver_url = hs.url
    try:
        yield hs
    finally:
        hs.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def bridge(
    request: pytest.FixtureRequest,
    synapse: Synapse,
    bridge_process: BridgeProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BridgeProcess]:
    """The bridge running against the test Synapse, once per database backend.

    Started before any test asks Synapse for /thirdparty/protocols: Synapse caches a failure for an hour.
    """
    if request.param == "sqlite":
        bridge_process.database = f"sqlite:{tmp_path_factory.mktemp('bridge-db') / 'bridge.db'}"
        bridge_process.start()
        try:
            yield bridge_process
        finally:
            bridge_process.stop()
    else:
        _require_postgres()
        with postgres.fresh_database() as url:
            bridge_process.database = url
            bridge_process.start()
            try:
                yield bridge_process
            finally:
                bridge_process.stop()


@pytest.fixture(scope="module")
def smsc() -> Iterator[NpmSmsc]:
    """The npm SMSC, one per module (each module that texts runs its own bridge against it)."""
    server = NpmSmsc()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in browser must offer 127.0.0.1 host candidates (aioice leaves loopback out)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def browser(loopback_ice: None) -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield pc
    finally:
        await pc.close()
