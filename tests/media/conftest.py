"""Fixtures for media tests: aiortc stand-in browsers that offer 127.0.0.1 host candidates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of host candidates; the stand-in browser must offer it (TESTING.md)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def browser(loopback_ice: None) -> AsyncIterator[RTCPeerConnection]:
    """An aiortc peer connection with no STUN server (its default would be a public one)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    yield pc
    await pc.close()
