"""Tones the bridge plays into a call itself: the warning that a caller's credit is about to run out.

A warning has to reach the ear of someone who is talking and not looking at a screen, so the Matrix notice
is paired with an in-band tone. ITU-T E.180 §2 leaves national cadences to operators; what is used here —
three 200 ms beeps of 440 Hz, 200 ms apart — is the common "pay-phone time is running out" pattern.

Frames are built in the codec of the path they are sent on (RFC 3551 §4.5.14 G.711, RFC 7587 Opus), one
per 20 ms, so a passthrough call needs no transcoder to play one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media.g711 import alaw_encode, ulaw_encode

__all__ = ["WARNING", "Cadence", "tone_frames"]

FRAME_MS = 20


@dataclass(frozen=True)
class Cadence:
    """``count`` beeps of ``frequency`` Hz, each ``on_ms`` long and followed by ``off_ms`` of silence."""

    frequency: float = 440.0
    on_ms: int = 200
    off_ms: int = 200
    count: int = 3
    level_dbfs: float = -12.0

    def signal(self, rate: int) -> np.ndarray:
        """The whole pattern as 16-bit samples at ``rate`` (whole 20 ms frames)."""
        on = int(rate * self.on_ms / 1000)
        off = int(rate * self.off_ms / 1000)
        amplitude = 32767 * 10 ** (self.level_dbfs / 20)
        t = np.arange(on) / rate
        beep = amplitude * np.sin(2 * np.pi * self.frequency * t)
        ramp = min(on // 2, rate // 200)  # 5 ms raised-cosine edges: no clicks at the ends
        if ramp:
            edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
            beep[:ramp] *= edge
            beep[-ramp:] *= edge[::-1]
        one = np.concatenate([beep, np.zeros(off)])
        pattern = np.tile(one, self.count)
        frame = rate * FRAME_MS // 1000
        pattern = np.pad(pattern, (0, -len(pattern) % frame))
        return np.round(pattern).astype(np.int16)


WARNING = Cadence()


def tone_frames(codec: str, clock_rate: int, cadence: Cadence = WARNING) -> list[bytes]:
    """The cadence as 20 ms payloads for ``codec`` (PCMU, PCMA or opus)."""
    name = codec.lower()
    if name in ("pcmu", "pcma"):
        samples = cadence.signal(clock_rate)
        encode = ulaw_encode if name == "pcmu" else alaw_encode
        frame = clock_rate * FRAME_MS // 1000
        return [encode(samples[i : i + frame]) for i in range(0, len(samples), frame)]
    if name == "opus":
        from media.opus import OpusEncoder

        encoder = OpusEncoder()
        samples = cadence.signal(48000)  # RFC 7587 §4.1: Opus's RTP clock is always 48 kHz
        frame = 48000 * FRAME_MS // 1000
        return [p for i in range(0, len(samples), frame) for p in encoder.encode(samples[i : i + frame])]
    raise ValueError(f"no tone for codec {codec}")
