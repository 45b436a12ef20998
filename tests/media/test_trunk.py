"""The trunk leg on loopback: port range, symmetric RTP latching, bad packets and floods counted."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from media.rtp import RtpHeader, build_rtp
from media.trunk import PortRange, TrunkLeg
from tests.media.peers import RtpPeer


class Sink:
    def __init__(self) -> None:
        self.packets: list[RtpHeader] = []
        self.rtcp: list[bytes] = []

    def rtp(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        self.packets.append(header)

    def on_rtcp(self, data: bytes, now: float) -> None:
        self.rtcp.append(data)


async def settle(condition, rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_ports_come_from_the_range_even_with_rtcp_above() -> None:
    ports = PortRange("127.0.0.1", 41000, 41998)
    legs = [await TrunkLeg.open(ports, Sink().rtp) for _ in range(3)]
    try:
        for leg in legs:
            assert 41000 <= leg.local_port <= 41998
            assert leg.local_port % 2 == 0
            assert leg.local_rtcp_port == leg.local_port + 1
        assert len({leg.local_port for leg in legs}) == 3
    finally:
        for leg in legs:
            leg.close()


def test_bad_port_range_is_refused() -> None:
    with pytest.raises(ValueError):
        PortRange("127.0.0.1", 5000, 4000)


async def test_exhausted_range_raises_oserror() -> None:
    ports = PortRange("127.0.0.1", 42000, 42002)
    first = await TrunkLeg.open(ports, Sink().rtp)
    try:
        with pytest.raises(OSError):
            await TrunkLeg.open(ports, Sink().rtp)
    finally:
        first.close()


async def test_leg_latches_to_the_real_source_and_rejects_others_while_it_talks() -> None:
    sink = Sink()
    leg = await TrunkLeg.open(PortRange("127.0.0.1"), sink.rtp, relatch_after=60.0)
    sdp_peer, nat_peer, intruder = await RtpPeer.open(), await RtpPeer.open(), await RtpPeer.open()
    try:
        leg.set_remote("127.0.0.1", sdp_peer.port)
        leg.send_rtp(build_rtp(0, 1, 0, 9, b"x"))
        await settle(lambda: sdp_peer.received)
        assert len(sdp_peer.received) == 1  # before latching: the SDP address
        # Media really comes from another port (NAT): we latch to it.
        nat_peer.send_to(build_rtp(0, 1, 0, 7, b"a"), ("127.0.0.1", leg.local_port))
        await settle(lambda: sink.packets)
        assert leg.remote == ("127.0.0.1", nat_peer.port)
        leg.send_rtp(build_rtp(0, 2, 160, 9, b"y"))
        await settle(lambda: nat_peer.received)
        assert len(nat_peer.received) == 1 and len(sdp_peer.received) == 1
        # Someone else cannot take the stream over while the latched source is active.
        intruder.send_to(build_rtp(0, 1, 0, 666, b"evil"), ("127.0.0.1", leg.local_port))
        await settle(lambda: leg.counters.foreign_source)
        assert leg.counters.foreign_source == 1
        assert leg.remote == ("127.0.0.1", nat_peer.port)
        assert [h.ssrc for h in sink.packets] == [7]
    finally:
        leg.close()
        for p in (sdp_peer, nat_peer, intruder):
            p.close()


def test_a_strict_leg_latches_only_to_the_address_its_sdp_announced() -> None:
    """Datagrams are handed to the leg directly (no socket): the addresses are only compared."""
    for strict in (True, False):
        sink = Sink()
        leg = TrunkLeg(sink.rtp, strict_source=strict)
        leg.set_remote("2001:db8::0:10", 4000)  # documentation addresses: nothing is sent anywhere
        leg.datagram_received(bytes(build_rtp(0, 1, 0, 7, b"a")), ("192.0.2.66", 5000))
        if not strict:  # the usual symmetric RTP: the first source wins
            assert leg.latched and leg.remote == ("192.0.2.66", 5000) and len(sink.packets) == 1
            continue
        assert not leg.latched and leg.counters.foreign_source == 1 and sink.packets == []
        # The announced address, from another port (its NAT or SBC chose it), spelt another way.
        leg.datagram_received(bytes(build_rtp(0, 2, 160, 7, b"b")), ("2001:db8::10", 4002))
        assert leg.latched and leg.remote == ("2001:db8::10", 4002) and len(sink.packets) == 1


async def test_leg_relatches_once_the_old_source_went_silent() -> None:
    sink = Sink()
    leg = await TrunkLeg.open(PortRange("127.0.0.1"), sink.rtp, relatch_after=0.0)
    first, second = await RtpPeer.open(), await RtpPeer.open()
    try:
        first.send_to(build_rtp(0, 1, 0, 1, b"a"), ("127.0.0.1", leg.local_port))
        await settle(lambda: sink.packets)
        second.send_to(build_rtp(0, 1, 0, 2, b"b"), ("127.0.0.1", leg.local_port))
        await settle(lambda: len(sink.packets) == 2)
        assert leg.remote == ("127.0.0.1", second.port)
    finally:
        leg.close()
        first.close()
        second.close()


async def test_malformed_packets_are_counted_not_raised() -> None:
    sink = Sink()
    leg = await TrunkLeg.open(PortRange("127.0.0.1"), sink.rtp)
    peer = await RtpPeer.open()
    try:
        for junk in (
            b"\x00",
            b"\x80\x00",
            b"\x40" + bytes(20),
            b"\x8f" + bytes(13),
            b"\xa0" + bytes(11) + b"\x00",
        ):
            peer.send_to(junk, ("127.0.0.1", leg.local_port))
        peer.send_to(build_rtp(0, 1, 0, 1, b"ok"), ("127.0.0.1", leg.local_port))
        await settle(lambda: sink.packets)
        await settle(lambda: leg.counters.malformed == 5)
        assert leg.counters.malformed == 5
        assert len(sink.packets) == 1
    finally:
        leg.close()
        peer.close()


async def test_flood_is_cut_to_the_configured_rate() -> None:
    sink = Sink()
    leg = await TrunkLeg.open(PortRange("127.0.0.1"), sink.rtp, max_packets_per_second=50.0)
    peer = await RtpPeer.open()
    try:
        for i in range(500):
            peer.send_to(build_rtp(0, i, i * 160, 1, b"x" * 160), ("127.0.0.1", leg.local_port))
            if i % 20 == 19:
                await asyncio.sleep(0.001)  # let the receiver drain so the kernel does not drop instead
        await settle(lambda: leg.counters.flood_dropped + len(sink.packets) >= 450, rounds=200)
        # A 500-packet burst against 50 packets/s (bursts of 12): nearly all are cut, and counted.
        assert leg.counters.flood_dropped >= 350
        assert len(sink.packets) < leg.counters.flood_dropped / 4
    finally:
        leg.close()
        peer.close()


async def test_rtcp_arrives_on_the_odd_port_and_goes_back_to_its_source() -> None:
    sink = Sink()
    leg = await TrunkLeg.open(PortRange("127.0.0.1"), sink.rtp, sink.on_rtcp)
    peer = await RtpPeer.open()
    try:
        rr = b"\x80\xc9\x00\x01\x00\x00\x00\x07"
        peer.send_to(rr, ("127.0.0.1", leg.local_rtcp_port))
        await settle(lambda: sink.rtcp)
        assert sink.rtcp == [rr]
        leg.send_rtcp(rr)
        await settle(lambda: peer.other)
        assert peer.other == [rr]
    finally:
        leg.close()
        peer.close()


async def test_open_cancelled_half_way_gives_its_ports_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setup cancelled while the RTCP socket is being attached must not keep the RTP port bound."""
    loop = asyncio.get_running_loop()
    real = loop.create_datagram_endpoint
    bound: list[int] = []

    async def slow_second(*args: Any, **kwargs: Any) -> Any:
        bound.append(kwargs["sock"].getsockname()[1])
        if len(bound) == 2:
            raise asyncio.CancelledError
        return await real(*args, **kwargs)

    monkeypatch.setattr(loop, "create_datagram_endpoint", slow_second)
    with pytest.raises(asyncio.CancelledError):
        await TrunkLeg.open(PortRange("127.0.0.1"), lambda *a: None)
    monkeypatch.undo()
    await asyncio.sleep(0)  # the transport's close completes on the next turn
    for port in bound:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # free again: would raise EADDRINUSE otherwise
        probe.close()


async def test_calls_give_their_trunk_leg_the_strict_source_setting(loopback_ice: None) -> None:
    from media.call import MediaCall, MediaConfig

    for strict in (True, False):
        call = await MediaCall.prepare(MediaConfig(trunk_strict_source=strict))
        try:
            assert call.trunk is not None and call.trunk.strict_source is strict
        finally:
            await call.close()
