"""Sample-rate conversion between 48 kHz (Opus) and 8 kHz (G.711) by an integer factor, with state.

A windowed-sinc low-pass FIR (Kaiser window, designed once at import with scipy) removes everything above
the narrow-band limit before decimating, so 4-24 kHz content of a browser's microphone does not alias
into the phone band, and removes the images after interpolating. The filter runs in polyphase form per
frame with numpy only: the decimator computes just the kept outputs (a strided window times the taps),
the interpolator one small matrix product per frame. Each keeps the tail of the previous frame as history,
so consecutive frames join without clicks and the delay is constant (``delay`` samples at 48 kHz).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.signal import firwin

__all__ = ["Decimator", "Interpolator"]

FACTOR = 6
HIGH_RATE = 48000
TAPS = 240  # 40 per phase
CUTOFF_HZ = 3600.0
_H = firwin(TAPS, CUTOFF_HZ, window=("kaiser", 8.0), fs=HIGH_RATE)
PER_PHASE = TAPS // FACTOR
#: Polyphase components: phase p holds h[p], h[p+6], … (decimator) and 6·h[p], … (interpolator gain).
#: Stored reversed: the per-frame path calls numpy's C correlate directly (what np.convolve does after
#: its Python-level checks, which cost about a microsecond a call, twelve calls a frame pair).
_DOWN_PHASES = [np.ascontiguousarray(_H[p::FACTOR][::-1]) for p in range(FACTOR)]
_UP_PHASES = [np.ascontiguousarray((_H[p::FACTOR] * FACTOR)[::-1]) for p in range(FACTOR)]
_VALID = 0

Int16Array = npt.NDArray[np.int16]
_correlate: Callable[..., npt.NDArray[np.float64]]
try:
    from numpy._core.multiarray import correlate as _correlate
except ImportError:  # numpy < 2: the public wrapper (same result, a little slower)
    _correlate = lambda a, v, mode: np.correlate(a, v, "valid")  # noqa: E731


def _to_int16(x: npt.NDArray[np.float64]) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


class Decimator:
    """48 kHz → 8 kHz: ``y[n] = Σ h[k]·x[6n-k]`` (what ``scipy.signal.upfirdn(h, x, down=6)`` computes),
    as six 40-tap convolutions over the phase streams, so only the kept outputs are computed."""

    delay = (TAPS - 1) / 2  # at 48 kHz

    def __init__(self) -> None:
        self._history: npt.NDArray[np.float64] = np.zeros(TAPS, dtype=np.float64)

    def process(self, samples: Int16Array) -> Int16Array:
        """``samples``: a multiple of 6 samples at 48 kHz (Opus frames always are)."""
        ext: npt.NDArray[np.float64] = np.concatenate((self._history, samples), dtype=np.float64)
        self._history = ext[-TAPS:]
        count = len(samples) // FACTOR
        # Phase p reads x[6m - p]; with TAPS samples of history in front, that stream starts at index
        # (6 - p) mod 6 of ``ext`` and is offset by 40 (p = 0) or 39 (p > 0) samples.
        y = _correlate(ext[0::FACTOR], _DOWN_PHASES[0], _VALID)[1 : count + 1]
        for p in range(1, FACTOR):
            y += _correlate(ext[FACTOR - p :: FACTOR], _DOWN_PHASES[p], _VALID)[:count]
        return _to_int16(y)


class Interpolator:
    """8 kHz → 48 kHz: ``y[6n+p] = Σ 6·h[6j+p]·x[n-j]`` (``upfirdn(6h, x, up=6)``), one 40-tap
    convolution per output phase."""

    delay = (TAPS - 1) / 2  # at 48 kHz

    def __init__(self) -> None:
        self._history: npt.NDArray[np.float64] = np.zeros(PER_PHASE - 1, dtype=np.float64)

    def process(self, samples: Int16Array) -> Int16Array:
        ext: npt.NDArray[np.float64] = np.concatenate((self._history, samples), dtype=np.float64)
        self._history = ext[-(PER_PHASE - 1) :]
        out = np.empty(len(samples) * FACTOR, dtype=np.float64)
        for p in range(FACTOR):
            out[p::FACTOR] = _correlate(ext, _UP_PHASES[p], _VALID)
        return _to_int16(out)
