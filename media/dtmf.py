"""DTMF as RTP events (RFC 4733): reading, relaying across clock rates, and generating digits.

An event is one RTP "event" lasting several packets that share its start timestamp (§2.5.1.2): the first
has the marker bit, later ones update the duration, and the end is sent three times with the E bit
(§2.5.1.4). The relay passes every packet through — retransmissions included, because the far end's
receiver relies on them under loss — and only scales timestamps (done by the stream rewriter) and the
duration field (done here) when the legs' clock rates differ (48000 on WebRTC with Opus, 8000 on a trunk).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DIGITS",
    "DtmfDetector",
    "DtmfGenerator",
    "EventPayload",
    "parse_event",
    "scale_event_duration",
]

#: Event codes 0-15 (RFC 4733 §3.2).
DIGITS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True)
class EventPayload:
    """The 4-byte telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None

    def to_bytes(self) -> bytes:
        return _EVENT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )


def parse_event(payload: bytes | bytearray | memoryview) -> EventPayload | None:
    """Read an event payload; None if it is too short (§2.3; multiple events per packet are not used)."""
    if len(payload) < 4:
        return None
    event, flags, duration = _EVENT.unpack_from(payload, 0)
    return EventPayload(event, bool(flags & 0x80), flags & 0x3F, duration)


def scale_event_duration(packet: bytearray, offset: int, num: int, den: int) -> None:
    """Scale the duration field of the event at ``packet[offset:]`` by ``num/den``, in place (§2.5.2.2)."""
    if len(packet) >= offset + 4:
        duration = (packet[offset + 2] << 8) | packet[offset + 3]
        duration = min(duration * num // den, 0xFFFF)
        packet[offset + 2] = duration >> 8
        packet[offset + 3] = duration & 0xFF


class DtmfDetector:
    """Turns received event packets into digits, once each (§2.5.1).

    A digit is reported when its event starts (a new timestamp, or a new event code at the same one); the
    end and its retransmissions are recognised and not reported again.
    """

    __slots__ = ("_last", "on_digit")

    def __init__(self, on_digit: Callable[[str, int], None]) -> None:
        #: Called with the digit and the event's RTP timestamp.
        self.on_digit = on_digit
        self._last: tuple[int, int] | None = None

    def feed(self, timestamp: int, payload: bytes | bytearray | memoryview) -> EventPayload | None:
        event = parse_event(payload)
        if event is None:
            return None
        key = (timestamp, event.event)
        if key != self._last:
            self._last = key
            digit = event.digit
            if digit is not None:
                self.on_digit(digit, timestamp)
        return event


class DtmfGenerator:
    """Packets for one injected digit (§2.5.1): start with marker, updates every ``ptime``, three ends.

    Sans-I/O: :meth:`packets` returns the payloads and the time offset at which each is due; the caller
    stamps them with the stream's sequence numbers and the event's timestamp.
    """

    def __init__(self, clock_rate: int, ptime_ms: int = 20, volume: int = 10) -> None:
        self.clock_rate = clock_rate
        self.ptime_ms = ptime_ms
        self.volume = volume

    def packets(self, digit: str, duration_ms: int = 160) -> list[tuple[float, bool, bytes]]:
        """``(seconds after start, marker, payload)`` for every packet of the event."""
        code = DIGITS.index(digit.upper())
        step = self.clock_rate * self.ptime_ms // 1000
        total = self.clock_rate * duration_ms // 1000
        result: list[tuple[float, bool, bytes]] = []
        elapsed = step
        i = 0
        while elapsed < total:
            result.append(
                (i * self.ptime_ms / 1000, i == 0, EventPayload(code, False, self.volume, elapsed).to_bytes())
            )
            elapsed += step
            i += 1
        end = EventPayload(code, True, self.volume, total).to_bytes()
        for _ in range(3):
            result.append((i * self.ptime_ms / 1000, i == 0, end))
            i += 1
        return result
