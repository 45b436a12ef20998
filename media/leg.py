"""What both legs share: packet counters, flood bounding, and the callback types the relay plugs in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from media.rtp import RtpHeader

__all__ = ["LegCounters", "RtcpSink", "RtpSink", "TokenBucket"]

#: Called with a clear-text RTP packet (writable, rewritten in place by the relay), its header and the
#: arrival time (``time.monotonic()``).
RtpSink = Callable[[bytearray, RtpHeader, float], None]
#: Called with a clear-text compound RTCP packet and the arrival time.
RtcpSink = Callable[[bytes, float], None]


@dataclass
class LegCounters:
    """Per-leg packet counts; every dropped packet is counted under one reason."""

    rtp_received: int = 0
    rtcp_received: int = 0
    sent: int = 0
    malformed: int = 0
    unauthenticated: int = 0
    foreign_source: int = 0
    flood_dropped: int = 0
    send_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def plus(self, native: Any) -> dict[str, int]:
        """These counts plus a C pump leg's (``media._fastpath.Leg``, or None before it took the socket)."""
        totals = self.as_dict()
        if native is not None:
            for name, value in native.counters().items():
                totals[name] += value
        return totals


class TokenBucket:
    """Bounds a flooding peer: ``rate`` packets per second with bursts of ``burst`` (sans-I/O)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = 0.0

    def allow(self, now: float) -> bool:
        tokens = self._tokens + (now - self._last) * self.rate
        self._last = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
