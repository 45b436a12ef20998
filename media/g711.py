"""G.711 µ-law and A-law (ITU-T G.711) with numpy lookup tables.

Decoding is one fancy-index into a 256-entry table; encoding one index into a 65536-entry table keyed by
the 16-bit sample (64 KiB each), built once at import from the reference segment algorithm. A 20 ms frame
(160 samples) costs about two microseconds either way.

``DECODE_CALLS`` counts every decode in this process, the C transcoder's included: the passthrough path
must leave it at zero, and the tests assert exactly that.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

__all__ = ["DECODE_CALLS", "alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

Samples = npt.NDArray[np.int16]


class _Counter:
    """Decodes in this process: those counted here plus those of the C transcoder (media/_transcode.c)."""

    def __init__(self) -> None:
        self._here = 0

    def add(self, count: int = 1) -> None:
        self._here += count

    @property
    def value(self) -> int:
        native = sys.modules.get("media._fastpath")
        return self._here + (int(native.decode_calls()) if native is not None else 0)


DECODE_CALLS = _Counter()


def _ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def _alaw_to_linear(code: int) -> int:
    code ^= 0x55
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


def _linear_to_ulaw(sample: int) -> int:
    """The segment search of the G.711 reference (14-bit magnitude, bias 33, clip 8159)."""
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, 8159) + 0x21
    for segment, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        if value <= end:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def _linear_to_alaw(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    magnitude = sample if sample >= 0 else -sample - 1
    magnitude = min(magnitude, 32767) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


_ULAW_DECODE = np.array([_ulaw_to_linear(c) for c in range(256)], dtype=np.int16)
_ALAW_DECODE = np.array([_alaw_to_linear(c) for c in range(256)], dtype=np.int16)
_ALL = np.arange(-32768, 32768, dtype=np.int32)
_ULAW_ENCODE = np.array([_linear_to_ulaw(int(s)) for s in _ALL], dtype=np.uint8)
_ALAW_ENCODE = np.array([_linear_to_alaw(int(s)) for s in _ALL], dtype=np.uint8)


def ulaw_decode(data: bytes | bytearray | memoryview) -> Samples:
    DECODE_CALLS.add()
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> Samples:
    DECODE_CALLS.add()
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: Samples) -> bytes:
    return _ULAW_ENCODE[samples.astype(np.int32) + 32768].tobytes()


def alaw_encode(samples: Samples) -> bytes:
    return _ALAW_ENCODE[samples.astype(np.int32) + 32768].tobytes()
