"""Opus (RFC 6716, RTP payload RFC 7587) through libopus, called directly.

libopus is reached with ctypes — the newer of the system's ``libopus.so.0`` (Debian ``libopus0``) and
the copy PyAV's wheel bundles — because per 20 ms frame PyAV's codec-context layer costs about as much as
libopus itself (measured here: encode 82 → 62 µs, decode 32 → 16 µs), and because only the direct API
offers libopus's own packet-loss concealment (``opus_decode`` with no data, which extrapolates from the
decoder state) and in-band FEC recovery (RFC 7587 §3.1 — the next packet carries a low-rate copy of the
lost one). If no library can be loaded, :class:`OpusEncoder`/:class:`OpusDecoder` fall back to PyAV.

Rates: towards a G.711 trunk the transcoder runs libopus at 8 kHz — the encoder takes the trunk's 8 kHz
audio and the decoder writes 8 kHz (``opus_encoder_create(8000, …)``/``opus_decoder_create(8000, …)``;
the RTP clock stays 48000, RFC 7587 §4.1). The encoder then codes narrow-band SILK (it knows nothing
above 4 kHz exists), the decoder skips synthesis above 4 kHz, and our 48 ⇄ 8 kHz resampler is not needed.
Measured with ``benchmarks/transcode_bench.py`` on espeak-ng speech, µs per 20 ms frame, the old 48 kHz
chain (libopus at 48 kHz + our resampler) against the 8 kHz one in the same run: Opus→PCMU 56 → 29
(1.9 times, whatever the complexity); PCMU→Opus at complexity 5: 166 → 81 (2.0 times), at 1: 103 → 38 (2.7).

Settings: mono (RFC 7587 §6: one decoder downmixes a stereo sender), VoIP application (signal type left
to libopus: forcing "voice" made 48 kHz encoding 3.5 times slower here for no PESQ gain), 24 kb/s by
default (narrow-band SILK settles at ~20 kb/s), DTX off, in-band FEC on with an expected loss of 1 % at
first, then whatever the browser reports losing in RTCP (1-25 %, :meth:`Transcoder.adapt_to_loss`).
Complexity is the encoder's main cost; PCMU→Opus PESQ (narrow-band, the PESQ test's speech) and µs per
frame at 8 kHz: 0 → 4.08, 35 µs; 1 → 4.18, 38 µs; 3 → 4.25, 70 µs; 5 → 4.34, 81 µs; 10 → 4.38, 149 µs.
Complexities 0-1 use SILK's single-state noise-shaping quantiser, 2 and up its delayed-decision one, hence
the step. The default is 1 (``MediaConfig.opus_complexity``): already above what the 48 kHz chain scored at
complexity 5 (4.06), at under half the cost; 5 buys +0.16 PESQ for twice the encoder time. FEC spends bits
of the primary encoding (at 48 kHz the PCMU→Opus path scored 4.43 without FEC, 4.11 at 1 %, 3.89 at 5 %)
and costs an extra quantiser pass (at 8 kHz, complexity 5: 58 µs without, 76 µs with), which is why the
figure follows the loss actually reported instead of assuming the worst.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import glob
import logging
import os
import re

import numpy as np
import numpy.typing as npt

__all__ = ["OpusDecoder", "OpusEncoder", "libopus"]

log = logging.getLogger(__name__)
Int16Array = npt.NDArray[np.int16]

#: The RTP clock of Opus, whatever the audio bandwidth (RFC 7587 §4.1).
RTP_CLOCK = 48000
#: The most an encoded payload may take, so that its RTP packet fits one 1500-byte datagram.
MAX_PAYLOAD = 1500 - 12
#: Sampling rates libopus encodes from and decodes to (RFC 6716 §2: it resamples internally).
SAMPLE_RATES = frozenset((8000, 12000, 16000, 24000, 48000))
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_GET_PACKET_LOSS_PERC = 4015
_SET_DTX = 4016
_GET_LOOKAHEAD = 4027


def frame_sizes(rate: int) -> frozenset[int]:
    """Frame sizes ``opus_encode`` takes at ``rate``: 2.5, 5, 10, 20, 40 and 60 ms (RFC 6716 §2.1.4)."""
    return frozenset(rate // 400 * n for n in (1, 2, 4, 8, 16, 24))


def _candidates() -> list[str]:
    """The libopus copies ctypes may load: the system's (Debian ``libopus0``) and PyAV's bundled one."""
    candidates = []
    found = ctypes.util.find_library("opus")
    if found:
        candidates.append(found)
    candidates.append("libopus.so.0")
    try:
        import av

        libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
        candidates.extend(sorted(glob.glob(os.path.join(libs, "libopus*.so*"))))
    except ImportError:  # pragma: no cover - av is a dependency
        pass
    return candidates


def version(lib: ctypes.CDLL) -> tuple[int, ...]:
    """The release of a loaded libopus (``opus_get_version_string``: "libopus 1.3.1", maybe a suffix)."""
    lib.opus_get_version_string.restype = ctypes.c_char_p
    text = (lib.opus_get_version_string() or b"").decode("ascii", "replace")
    match = re.search(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _load() -> ctypes.CDLL | None:
    """The newest libopus found: releases keep getting faster (1.6.1 encodes our narrow-band frames about
    15 % faster than Debian 12's 1.3.1, measured with 100 interleaved encoders), and the API is stable."""
    loaded: list[ctypes.CDLL] = []
    for name in _candidates():
        try:
            loaded.append(ctypes.CDLL(name))
        except OSError:
            continue
    if not loaded:
        log.warning("libopus not found for ctypes; using PyAV's Opus codec (slower, no native PLC)")
        return None
    lib = max(loaded, key=version)
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int32,
    ]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_repacketizer_create.restype = ctypes.c_void_p
    lib.opus_repacketizer_init.restype = ctypes.c_void_p
    lib.opus_repacketizer_init.argtypes = [ctypes.c_void_p]
    lib.opus_repacketizer_cat.restype = ctypes.c_int
    lib.opus_repacketizer_cat.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_out.restype = ctypes.c_int32
    lib.opus_repacketizer_out.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_repacketizer_destroy.argtypes = [ctypes.c_void_p]
    return lib


libopus = _load()


def _ctl(encoder: int, request: int, value: int) -> None:
    assert libopus is not None
    # opus_encoder_ctl is variadic; an int argument passes the same way on every ABI we run on.
    libopus.opus_encoder_ctl(ctypes.c_void_p(encoder), ctypes.c_int(request), ctypes.c_int(value))


class OpusEncoder:
    """Mono int16 frames at ``sample_rate`` in, Opus packets out.

    ``sample_rate`` is the rate of the audio handed in, not the RTP clock (always 48000, RFC 7587 §4.1):
    towards a G.711 trunk the transcoder gives 8 kHz audio straight from the trunk, and libopus, knowing
    there is nothing above 4 kHz, codes narrow-band SILK — a fraction of the work of coding 48 kHz audio,
    and no 8→48 kHz resampler of ours in front (measured in the module docstring).
    """

    def __init__(self, bitrate: int = 24000, complexity: int = 5, sample_rate: int = RTP_CLOCK) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"libopus does not encode from {sample_rate} Hz")
        self.sample_rate = sample_rate
        self._frame_sizes = frame_sizes(sample_rate)
        self._ten_ms = sample_rate // 100
        self._max_frame = sample_rate * 120 // 1000
        self._av = None
        self._handle = 0
        if libopus is None:
            self._av = _AvEncoder(bitrate, sample_rate)
            return
        error = ctypes.c_int()
        handle = libopus.opus_encoder_create(sample_rate, 1, _APPLICATION_VOIP, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._handle = handle
        self._handle_arg = ctypes.c_void_p(handle)
        for request, value in (
            (_SET_BITRATE, bitrate),
            (_SET_COMPLEXITY, complexity),
            (_SET_INBAND_FEC, 1),
            (_SET_PACKET_LOSS_PERC, 1),
            # One packet per frame, always: the transcoder gives each the input packet's sequence number
            # (libopus's default, stated because DTX would break that numbering).
            (_SET_DTX, 0),
        ):
            _ctl(handle, request, value)
        self._buffer = ctypes.create_string_buffer(1500)

    @property
    def expected_loss(self) -> int:
        """The packet loss (percent) the encoder protects against with in-band FEC."""
        if libopus is None or not self._handle:
            return 0
        value = ctypes.c_int()
        libopus.opus_encoder_ctl(self._handle_arg, ctypes.c_int(_GET_PACKET_LOSS_PERC), ctypes.byref(value))
        return value.value

    def set_expected_loss(self, percent: int) -> None:
        """OPUS_SET_PACKET_LOSS_PERC: how much of its bit budget libopus gives the in-band FEC copy of the
        previous frame (RFC 6716 §2.1.7, RFC 7587 §3.1). More protection costs the primary encoding."""
        if self._handle:
            _ctl(self._handle, _SET_PACKET_LOSS_PERC, max(0, min(100, int(percent))))

    @property
    def lookahead(self) -> int:
        """The encoder's algorithmic delay in samples at ``sample_rate`` (OPUS_GET_LOOKAHEAD): 6.5 ms
        for VoIP, i.e. 312 at 48 kHz, 52 at 8 kHz."""
        if libopus is None or not self._handle:
            return self.sample_rate * 13 // 2000
        value = ctypes.c_int()
        libopus.opus_encoder_ctl(self._handle_arg, ctypes.c_int(_GET_LOOKAHEAD), ctypes.byref(value))
        return value.value

    def encode(self, samples: Int16Array) -> list[bytes]:
        """One Opus packet for ``samples``. Durations Opus has no single frame for but that are whole
        10 ms multiples up to 120 ms (a 30 ms G.711 trunk!) become one packet of 10 ms frames (RFC 6716
        §3.2.5, via libopus's repacketizer). Anything else raises ``ValueError``."""
        if self._av is not None:
            return self._av.encode(samples)
        assert libopus is not None
        pcm = np.ascontiguousarray(samples, dtype=np.int16)
        count = len(pcm)
        if count in self._frame_sizes:
            return [self._encode_frame(pcm.ctypes.data, count)]
        ten_ms = self._ten_ms
        if count % ten_ms or not 0 < count <= self._max_frame:
            raise ValueError(f"no Opus framing for {count} samples at {self.sample_rate} Hz")
        frames = [
            self._encode_frame(pcm.ctypes.data + 2 * offset, ten_ms) for offset in range(0, count, ten_ms)
        ]
        repacketizer = libopus.opus_repacketizer_create()
        try:
            libopus.opus_repacketizer_init(repacketizer)
            for frame in frames:
                if libopus.opus_repacketizer_cat(repacketizer, frame, len(frame)) != 0:
                    raise ValueError("Opus frames could not be combined")
            size = libopus.opus_repacketizer_out(repacketizer, self._buffer, MAX_PAYLOAD)
        finally:
            libopus.opus_repacketizer_destroy(repacketizer)
        if size < 0:
            raise ValueError(f"opus_repacketizer_out failed ({size})")
        return [self._buffer.raw[:size]]

    def _encode_frame(self, pointer: int, count: int) -> bytes:
        assert libopus is not None
        size = libopus.opus_encode(self._handle_arg, pointer, count, self._buffer, MAX_PAYLOAD)
        if size < 0:
            raise ValueError(f"opus_encode failed ({size})")
        return self._buffer.raw[:size]

    def __del__(self) -> None:
        if self._handle and libopus is not None:
            libopus.opus_encoder_destroy(self._handle)
            self._handle = 0


class OpusDecoder:
    """Opus packets in, mono int16 at ``sample_rate`` out; :meth:`conceal` and :meth:`recover` fill a
    lost packet.

    Decoding straight to 8 kHz for a G.711 trunk lets libopus skip what would be thrown away: CELT bands
    above 4 kHz are zeroed before its inverse MDCT (an ideal low-pass, so no aliasing) and SILK
    narrow-band needs no resampling; our 48→8 kHz decimator is not needed.
    """

    def __init__(self, sample_rate: int = RTP_CLOCK) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"libopus does not decode to {sample_rate} Hz")
        self.sample_rate = sample_rate
        #: Samples in a 20 ms frame at ``sample_rate`` (the usual packet, RFC 7587 §4.2).
        self.frame_samples = sample_rate // 50
        self._max_frame = sample_rate * 120 // 1000
        self._av = None
        self._handle = 0
        if libopus is None:
            self._av = _AvDecoder(sample_rate)
            return
        error = ctypes.c_int()
        handle = libopus.opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._handle = handle
        self._handle_arg = ctypes.c_void_p(handle)
        self._pcm = np.zeros(self._max_frame, dtype=np.int16)
        self._pcm_pointer = self._pcm.ctypes.data

    @property
    def native(self) -> bool:
        """Whether libopus's own concealment and FEC are available (not with the PyAV fallback)."""
        return self._av is None

    def _run(self, payload: bytes | None, frame: int, fec: int) -> Int16Array:
        assert libopus is not None
        count = libopus.opus_decode(
            self._handle_arg, payload, len(payload) if payload else 0, self._pcm_pointer, frame, fec
        )
        if count < 0:
            return np.zeros(0, dtype=np.int16)
        return self._pcm[:count].copy()

    def decode(self, payload: bytes) -> Int16Array:
        if self._av is not None:
            return self._av.decode(payload)
        return self._run(payload, self._max_frame, 0)

    def conceal(self, samples: int | None = None) -> Int16Array:
        """libopus packet-loss concealment for one missing frame of ``samples`` (at ``sample_rate``;
        20 ms by default). libopus needs a multiple of 2.5 ms here."""
        samples = self.frame_samples if samples is None else samples
        if self._av is not None:
            return np.zeros(samples, dtype=np.int16)
        return self._run(None, samples, 0)

    def recover(self, next_payload: bytes, samples: int | None = None) -> Int16Array:
        """The frame before ``next_payload``, from the FEC data it carries (RFC 7587 §3.1); ``samples``
        is the lost frame's duration at ``sample_rate`` (20 ms by default)."""
        samples = self.frame_samples if samples is None else samples
        if self._av is not None:
            return np.zeros(samples, dtype=np.int16)
        return self._run(next_payload, samples, 1)

    def __del__(self) -> None:
        if self._handle and libopus is not None:
            libopus.opus_decoder_destroy(self._handle)
            self._handle = 0


class _AvEncoder:
    """PyAV (ffmpeg's libopus wrapper) fallback; ffmpeg takes 8-48 kHz input as libopus does."""

    def __init__(self, bitrate: int, sample_rate: int) -> None:
        import av

        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = sample_rate
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bitrate
        codec.options = {"application": "voip", "frame_duration": "20", "fec": "1", "packet_loss": "1"}
        codec.open()
        self._codec = codec
        self._pts = 0
        self._sample_rate = sample_rate
        self._time_base = fractions.Fraction(1, sample_rate)

    def encode(self, samples: Int16Array) -> list[bytes]:
        from av.audio.frame import AudioFrame

        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += len(samples)
        return [bytes(p) for p in self._codec.encode(frame)]


class _AvDecoder:
    """PyAV fallback. ffmpeg's libopus decoder always outputs 48 kHz, so 8 kHz output goes through our
    own decimator (:mod:`media.resample`); other rates are not offered by the fallback."""

    def __init__(self, sample_rate: int) -> None:
        import av

        from media.resample import Decimator

        if sample_rate not in (8000, RTP_CLOCK):
            raise ValueError(f"the PyAV Opus fallback decodes to 8000 or 48000 Hz, not {sample_rate}")
        codec = av.CodecContext.create("libopus", "r")
        codec.sample_rate = RTP_CLOCK
        codec.layout = "mono"
        codec.format = "s16"
        codec.open()
        self._codec = codec
        self._decimate = Decimator().process if sample_rate == 8000 else None

    def decode(self, payload: bytes) -> Int16Array:
        import av

        frames = self._codec.decode(av.Packet(payload))
        if not frames:
            return np.zeros(0, dtype=np.int16)
        out = [f.to_ndarray().reshape(-1) for f in frames]
        samples = np.concatenate(out) if len(out) > 1 else out[0]
        samples = samples.astype(np.int16, copy=False)
        return self._decimate(samples) if self._decimate is not None else samples
