"""RTCP terminated per leg (RFC 3550 §6): reception statistics, SR/RR generation, peer reports as stats.

A relay is not a mixer of sources but it rewrites SSRCs, so reports cannot be forwarded: each leg keeps its
own :class:`RtcpSession`, which counts what it receives (§A.3 loss, §A.8 jitter) and sends, builds a
compound SR or RR with an SDES CNAME (§6.1), and reads the peer's reports into :class:`LegStats`
(loss, jitter, round-trip time from LSR/DLSR, §6.4.1). Sans-I/O: fed packets and time.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

__all__ = ["LegStats", "ReceptionStats", "ReportBlock", "RtcpSession", "SendingStats", "parse_compound"]

SR = 200
RR = 201
SDES = 202
BYE = 203
_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packets, (octets follows)
_BLOCK = struct.Struct("!IIIIII")
NTP_EPOCH_OFFSET = 2208988800


@dataclass(frozen=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass
class LegStats:
    """What the peer reported about our stream and what we measured of theirs."""

    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    #: Our measurement of the incoming stream (§A.3, §A.8).
    received_lost: int = 0
    received_jitter_ms: float = 0.0
    #: From the peer's last report about our stream.
    remote_fraction_lost: float = 0.0
    remote_cumulative_lost: int = 0
    remote_jitter_ms: float = 0.0
    rtt_ms: float | None = None
    reports_received: int = 0
    bye: bool = False


def parse_compound(data: bytes | bytearray) -> list[tuple[int, int, bytes | bytearray]] | None:
    """Split a compound RTCP packet into ``(packet type, count, body)``; None if malformed (§6.1)."""
    result = []
    offset = 0
    size = len(data)
    while offset < size:
        if offset + 4 > size:
            return None
        first, ptype, length = _HEADER.unpack_from(data, offset)
        end = offset + 4 * (length + 1)
        if first >> 6 != 2 or end > size:
            return None
        result.append((ptype, first & 0x1F, data[offset + 4 : end]))
        offset = end
    return result or None


def _blocks(body: bytes | bytearray, start: int, count: int) -> list[ReportBlock]:
    blocks = []
    for i in range(count):
        at = start + 24 * i
        if at + 24 > len(body):
            break
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, at)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr))
    return blocks


def ntp_time(now_wall: float) -> tuple[int, int]:
    seconds = now_wall + NTP_EPOCH_OFFSET
    msw = int(seconds)
    return msw & 0xFFFFFFFF, int((seconds - msw) * (1 << 32)) & 0xFFFFFFFF


class ReceptionStats:
    """What a leg's incoming stream looked like (RFC 3550 §A.1 sequence and cycles, §A.3 loss, §A.8 jitter).

    Its own object, shared by the Python relay and the C one (``media._fastpath.Reception`` is the same
    thing in C; :mod:`media.fastpath` picks one), so a report sees every packet whichever path relayed it.
    """

    __slots__ = (
        "_transit",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "max_seq",
        "packets_received",
        "received",
        "received_prior",
        "remote_ssrc",
    )

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        self.clock_rate = clock_rate
        self.remote_ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.packets_received = 0
        self.jitter = 0.0
        self._transit: float | None = None

    def on_rtp_received(self, ssrc: int, seq: int, timestamp: int, now: float) -> None:
        """Update §A.3 counts and the §A.8 interarrival jitter for a received packet."""
        if ssrc != self.remote_ssrc:
            self.remote_ssrc = ssrc
            self.base_seq = self.max_seq = seq
            self.cycles = 0
            self.received = 0
            self.expected_prior = self.received_prior = 0
            self._transit = None
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 0x10000
                self.max_seq = seq
        self.received += 1
        self.packets_received += 1
        transit = now * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (source restarts)
                self.jitter += (d - self.jitter) / 16
        self._transit = transit


class SendingStats:
    """What our sender report says of the stream we send a leg (RFC 3550 §6.4.1); C twin in
    ``media._fastpath.Sending``."""

    __slots__ = ("last_rtp_ts", "last_send_time", "octets", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.octets = 0
        self.last_rtp_ts = 0
        self.last_send_time = 0.0

    def on_rtp_sent(self, timestamp: int, payload_size: int, now: float) -> None:
        self.packets += 1
        self.octets += payload_size
        self.last_rtp_ts = timestamp
        self.last_send_time = now


class RtcpSession:
    """RTCP for one leg: our sending SSRC towards it, statistics of what it sends us."""

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        cname: str = "telebridge",
        *,
        reception: ReceptionStats | None = None,
        sending: SendingStats | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.cname = cname.encode()[:255]
        self._stats = LegStats()
        #: Counted per packet by whichever relay path carried it (Python or C: same interface).
        self.reception = reception if reception is not None else ReceptionStats(clock_rate)
        self.sending = sending if sending is not None else SendingStats()
        self._last_sr_ntp_middle = 0
        self._last_sr_arrival = 0.0

    @property
    def stats(self) -> LegStats:
        """The peer's reports and our counts, as of now."""
        stats = self._stats
        stats.packets_received = self.reception.packets_received
        stats.packets_sent = self.sending.packets
        stats.octets_sent = self.sending.octets
        return stats

    # Incoming and outgoing RTP -------------------------------------------------------------------
    def on_rtp_received(self, ssrc: int, seq: int, timestamp: int, now: float) -> None:
        self.reception.on_rtp_received(ssrc, seq, timestamp, now)

    def on_rtp_sent(self, timestamp: int, payload_size: int, now: float) -> None:
        self.sending.on_rtp_sent(timestamp, payload_size, now)

    # Reports ---------------------------------------------------------------------------------------
    def _report_block(self, now: float) -> bytes:
        rx = self.reception
        remote_ssrc = rx.remote_ssrc
        if remote_ssrc is None:
            return b""
        extended_max = rx.cycles + rx.max_seq
        expected = extended_max - rx.base_seq + 1
        received = rx.received
        lost = max(expected - received, 0)
        expected_interval = expected - rx.expected_prior
        received_interval = received - rx.received_prior
        rx.expected_prior = expected
        rx.received_prior = received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        self._stats.received_lost = lost
        self._stats.received_jitter_ms = rx.jitter * 1000 / self.clock_rate
        dlsr = int((now - self._last_sr_arrival) * 65536) if self._last_sr_ntp_middle else 0
        return _BLOCK.pack(
            remote_ssrc,
            (min(fraction, 255) << 24) | (min(lost, 0x7FFFFF) & 0xFFFFFF),
            extended_max & 0xFFFFFFFF,
            int(rx.jitter) & 0xFFFFFFFF,
            self._last_sr_ntp_middle,
            dlsr & 0xFFFFFFFF,
        )

    def build_report(self, now: float, wall: float | None = None) -> bytes:
        """A compound SR (if we sent since the last report) or RR, plus SDES CNAME (§6.1, §6.4)."""
        block = self._report_block(now)
        count = 1 if block else 0
        sending = self.sending
        if sending.packets:
            msw, lsw = ntp_time(time.time() if wall is None else wall)
            elapsed = int((now - sending.last_send_time) * self.clock_rate)
            rtp_ts = (sending.last_rtp_ts + elapsed) & 0xFFFFFFFF
            body = _SR_INFO.pack(self.ssrc, msw, lsw, rtp_ts, sending.packets & 0xFFFFFFFF)
            body += struct.pack("!I", sending.octets & 0xFFFFFFFF) + block
            report = _HEADER.pack(0x80 | count, SR, (len(body) + 4) // 4 - 1) + body
        else:
            body = struct.pack("!I", self.ssrc) + block
            report = _HEADER.pack(0x80 | count, RR, (len(body) + 4) // 4 - 1) + body
        chunk = struct.pack("!IBB", self.ssrc, 1, len(self.cname)) + self.cname + b"\x00"
        chunk += b"\x00" * (-len(chunk) % 4)
        sdes = _HEADER.pack(0x81, SDES, (len(chunk) + 4) // 4 - 1) + chunk
        return report + sdes

    def on_rtcp_received(self, data: bytes | bytearray, now: float, wall: float | None = None) -> bool:
        """Read the peer's compound packet; False if malformed (dropped and counted by the caller)."""
        packets = parse_compound(data)
        if packets is None:
            return False
        for ptype, count, body in packets:
            if ptype == SR and len(body) >= 24:
                _, msw, lsw, _, _ = _SR_INFO.unpack_from(body, 0)
                self._last_sr_ntp_middle = ((msw & 0xFFFF) << 16) | (lsw >> 16)
                self._last_sr_arrival = now
                self._read_blocks(_blocks(body, 24, count), wall)
            elif ptype == RR and len(body) >= 4:
                self._read_blocks(_blocks(body, 4, count), wall)
            elif ptype == BYE:
                self._stats.bye = True
        return True

    def _read_blocks(self, blocks: list[ReportBlock], wall: float | None) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            stats = self._stats
            stats.reports_received += 1
            stats.remote_fraction_lost = block.fraction_lost / 256
            stats.remote_cumulative_lost = block.cumulative_lost
            stats.remote_jitter_ms = block.jitter * 1000 / self.clock_rate
            if block.lsr:
                msw, lsw = ntp_time(time.time() if wall is None else wall)
                middle_now = ((msw & 0xFFFF) << 16) | (lsw >> 16)
                rtt = (middle_now - block.lsr - block.dlsr) & 0xFFFFFFFF
                if rtt < 0x80000000:
                    stats.rtt_ms = rtt * 1000 / 65536
