"""STUN only when configured: a binding server on loopback yields a server-reflexive candidate."""

from __future__ import annotations

import asyncio
from typing import Any

from aioice import stun

from media.webrtc import WebRtcLeg


class BindingServer(asyncio.DatagramProtocol):
    """The smallest STUN server (RFC 8489 §7.3): answers Binding requests with XOR-MAPPED-ADDRESS."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return
        self.requests += 1
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


async def test_no_stun_server_is_contacted_unless_configured() -> None:
    leg = WebRtcLeg(lambda *a: None)
    try:
        await leg.gather()
        candidates = leg._ice._connection.local_candidates
        assert [c.type for c in candidates] == ["host"]
        assert [c.host for c in candidates] == ["127.0.0.1"]
        assert leg._ice._connection.stun_server is None
    finally:
        await leg.close()


async def test_configured_stun_server_gives_a_server_reflexive_candidate() -> None:
    from aiortc import RTCIceServer

    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(BindingServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    leg = WebRtcLeg(lambda *a: None, ice_servers=[RTCIceServer(urls=f"stun:127.0.0.1:{port}")])
    try:
        await leg.gather()
        candidates = leg._ice._connection.local_candidates
        assert server.requests >= 1
        assert {c.type for c in candidates} == {"host", "srflx"}
        srflx = next(c for c in candidates if c.type == "srflx")
        host = next(c for c in candidates if c.type == "host")
        assert (srflx.host, srflx.port) == (host.host, host.port)  # on loopback nothing is translated
        assert any(
            value and "typ srflx" in value
            for name, value in leg.local_attributes("active")
            if name == "candidate"
        )
    finally:
        await leg.close()
        transport.close()
