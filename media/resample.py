"""Sample-rate conversion between 48 kHz (Opus) and 8 kHz (G.711) by an integer factor, with state.

A windowed-sinc low-pass FIR (Kaiser window, designed once at import with scipy) removes everything above
the narrow-band limit before decimating, so 4-24 kHz content of a browser's microphone does not alias
into the phone band, and removes the images after interpolating. The filter runs in polyphase form per
frame with numpy only: the decimator computes just the kept outputs (a strided window times the taps),
the interpolator one small matrix product per frame. Each keeps the tail of the previous frame as history,
so consecutive frames join without clicks and the delay is constant (``delay`` samples at 48 kHz).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from scipy.signal import firwin

__all__ = ["Decimator", "Interpolator"]

FACTOR = 6
HIGH_RATE = 48000
TAPS = 240  # 40 per phase
CUTOFF_HZ = 3600.0
_H = firwin(TAPS, CUTOFF_HZ, window=("kaiser", 8.0), fs=HIGH_RATE)
_H_REVERSED = np.ascontiguousarray(_H[::-1])
#: Interpolator phases: row p holds h[p], h[p+6], …, reversed to match the sample window order.
_PHASES = np.ascontiguousarray((_H.reshape(-1, FACTOR).T * FACTOR)[:, ::-1].T)

Int16Array = npt.NDArray[np.int16]


def _to_int16(x: npt.NDArray[np.float64]) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


class Decimator:
    """48 kHz → 8 kHz. Input length must be a multiple of 6 (Opus frames always are)."""

    delay = (TAPS - 1) / 2  # at 48 kHz

    def __init__(self) -> None:
        self._history = np.zeros(TAPS - 1, dtype=np.float64)

    def process(self, samples: Int16Array) -> Int16Array:
        x = np.concatenate((self._history, samples.astype(np.float64)))
        self._history = x[-(TAPS - 1) :]
        # Only every 6th output is needed: a strided view (no copy) of the kept windows; einsum reads it
        # in place where ``@`` would first copy it into a contiguous 160 by 240 array (twice as slow).
        count = (len(x) - TAPS) // FACTOR + 1
        windows = as_strided(
            x, shape=(count, TAPS), strides=(x.strides[0] * FACTOR, x.strides[0]), writeable=False
        )
        return _to_int16(np.einsum("ij,j->i", windows, _H_REVERSED))


class Interpolator:
    """8 kHz → 48 kHz."""

    delay = (TAPS - 1) / 2  # at 48 kHz
    _per_phase = TAPS // FACTOR

    def __init__(self) -> None:
        self._history = np.zeros(self._per_phase - 1, dtype=np.float64)

    def process(self, samples: Int16Array) -> Int16Array:
        x = np.concatenate((self._history, samples.astype(np.float64)))
        self._history = x[-(self._per_phase - 1) :]
        windows = sliding_window_view(x, self._per_phase)
        return _to_int16((windows @ _PHASES).reshape(-1))
