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

__all__ = ["LegStats", "ReportBlock", "RtcpSession", "parse_compound"]

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


class RtcpSession:
    """RTCP for one leg: our sending SSRC towards it, statistics of what it sends us."""

    def __init__(self, ssrc: int, clock_rate: int, cname: str = "telebridge") -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.cname = cname.encode()[:255]
        self.stats = LegStats()
        self._remote_ssrc: int | None = None
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._transit: float | None = None
        self._last_sr_ntp_middle = 0
        self._last_sr_arrival = 0.0
        self._last_rtp_ts = 0
        self._last_send_time = 0.0

    # Incoming RTP (the peer's stream) ------------------------------------------------------------
    def on_rtp_received(self, ssrc: int, seq: int, timestamp: int, now: float) -> None:
        """Update §A.3 counts and the §A.8 interarrival jitter for a received packet."""
        if ssrc != self._remote_ssrc:
            self._remote_ssrc = ssrc
            self._base_seq = self._max_seq = seq
            self._cycles = 0
            self._received = 0
            self._expected_prior = self._received_prior = 0
            self._transit = None
        else:
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self._max_seq:
                    self._cycles += 0x10000
                self._max_seq = seq
        self._received += 1
        self.stats.packets_received += 1
        transit = now * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (source restarts)
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def on_rtp_sent(self, timestamp: int, payload_size: int, now: float) -> None:
        self.stats.packets_sent += 1
        self.stats.octets_sent += payload_size
        self._last_rtp_ts = timestamp
        self._last_send_time = now

    # Reports ---------------------------------------------------------------------------------------
    def _report_block(self, now: float) -> bytes:
        if self._remote_ssrc is None:
            return b""
        extended_max = self._cycles + self._max_seq
        expected = extended_max - self._base_seq + 1
        lost = max(expected - self._received, 0)
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        self.stats.received_lost = lost
        self.stats.received_jitter_ms = self._jitter * 1000 / self.clock_rate
        dlsr = int((now - self._last_sr_arrival) * 65536) if self._last_sr_ntp_middle else 0
        return _BLOCK.pack(
            self._remote_ssrc,
            (min(fraction, 255) << 24) | (min(lost, 0x7FFFFF) & 0xFFFFFF),
            extended_max & 0xFFFFFFFF,
            int(self._jitter) & 0xFFFFFFFF,
            self._last_sr_ntp_middle,
            dlsr & 0xFFFFFFFF,
        )

    def build_report(self, now: float, wall: float | None = None) -> bytes:
        """A compound SR (if we sent since the last report) or RR, plus SDES CNAME (§6.1, §6.4)."""
        block = self._report_block(now)
        count = 1 if block else 0
        if self.stats.packets_sent:
            msw, lsw = ntp_time(time.time() if wall is None else wall)
            rtp_ts = (self._last_rtp_ts + int((now - self._last_send_time) * self.clock_rate)) & 0xFFFFFFFF
            body = _SR_INFO.pack(self.ssrc, msw, lsw, rtp_ts, self.stats.packets_sent & 0xFFFFFFFF)
            body += struct.pack("!I", self.stats.octets_sent & 0xFFFFFFFF) + block
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
                self.stats.bye = True
        return True

    def _read_blocks(self, blocks: list[ReportBlock], wall: float | None) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self.stats.reports_received += 1
            self.stats.remote_fraction_lost = block.fraction_lost / 256
            self.stats.remote_cumulative_lost = block.cumulative_lost
            self.stats.remote_jitter_ms = block.jitter * 1000 / self.clock_rate
            if block.lsr:
                msw, lsw = ntp_time(time.time() if wall is None else wall)
                middle_now = ((msw & 0xFFFF) << 16) | (lsw >> 16)
                rtt = (middle_now - block.lsr - block.dlsr) & 0xFFFFFFFF
                if rtt < 0x80000000:
                    self.stats.rtt_ms = rtt * 1000 / 65536
