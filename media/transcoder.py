"""The transcoding path: Opus 48 kHz ⇄ G.711 8 kHz (and µ-law ⇄ A-law), one packet in, packets out.

Used only when the legs could not agree on a codec. Each direction has its own :class:`Transcoder` with
its own decoder, resampler and encoder state. Output packets keep the input's sequence number and
timestamp (in the *input* clock); the stream rewriter then maps them onto the outgoing stream and scales
the timestamp, exactly as for passthrough, so DTMF events and audio share one numbering.

Opus: PyAV's libopus, mono, VoIP application, 20 ms frames, configurable bitrate (24 kb/s default, ample
for narrow-band speech), in-band FEC on. G.711: the numpy tables of :mod:`media.g711`.

Packet-loss concealment: a gap of up to ``MAX_CONCEALED`` packets in the input is filled with the last
decoded frame, attenuated by half for each missing packet, so the encoder and resampler see continuous
audio and the far end hears a fade rather than a click; the generated packets take the missing sequence
numbers (nothing else will), longer gaps are left as gaps.
"""

from __future__ import annotations

import fractions
import logging
from collections import deque
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame

from media import g711
from media.resample import Decimator, Interpolator
from media.rtp import RTP_HEADER, RtpHeader

__all__ = ["OpusDecoder", "OpusEncoder", "Transcoder"]

log = logging.getLogger(__name__)
Int16Array = npt.NDArray[np.int16]
MAX_CONCEALED = 5
RATES = {"pcmu": 8000, "pcma": 8000, "opus": 48000}


class OpusEncoder:
    def __init__(self, bitrate: int = 24000) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = 48000
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bitrate
        codec.options = {"application": "voip", "frame_duration": "20", "fec": "1", "packet_loss": "5"}
        codec.open()
        self._codec = codec
        self._pts = 0
        self._time_base = fractions.Fraction(1, 48000)

    def encode(self, samples: Int16Array) -> list[bytes]:
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += len(samples)
        return [bytes(p) for p in self._codec.encode(frame)]


class OpusDecoder:
    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "r")
        codec.sample_rate = 48000
        codec.layout = "mono"
        codec.format = "s16"
        codec.open()
        self._codec = codec

    def decode(self, payload: bytes) -> Int16Array:
        g711.DECODE_CALLS.value += 1
        frames = self._codec.decode(av.Packet(payload))
        if not frames:
            return np.zeros(0, dtype=np.int16)
        out = [f.to_ndarray().reshape(-1) for f in frames]
        samples = np.concatenate(out) if len(out) > 1 else out[0]
        if samples.dtype != np.int16:
            samples = np.clip(samples * 32768, -32768, 32767).astype(np.int16)
        return samples.astype(np.int16, copy=False)


class Transcoder:
    """One direction: decode ``source`` → resample → encode ``target`` (codec names as in SDP)."""

    def __init__(self, source: str, target: str, *, bitrate: int = 24000) -> None:
        src, dst = source.lower(), target.lower()
        if src not in RATES or dst not in RATES:
            raise ValueError(f"cannot transcode {source} to {target}")
        self.source, self.target = src, dst
        self._decode: Callable[[bytes], Int16Array]
        if src == "opus":
            self._decode = OpusDecoder().decode
        elif src == "pcmu":
            self._decode = g711.ulaw_decode
        else:
            self._decode = g711.alaw_decode
        self._encode: Callable[[Int16Array], list[bytes]]
        if dst == "opus":
            self._encode = OpusEncoder(bitrate).encode
        elif dst == "pcmu":
            self._encode = lambda s: [g711.ulaw_encode(s)]
        else:
            self._encode = lambda s: [g711.alaw_encode(s)]
        self._resample: Callable[[Int16Array], Int16Array] | None = None
        if RATES[src] > RATES[dst]:
            self._resample = Decimator().process
        elif RATES[src] < RATES[dst]:
            self._resample = Interpolator().process
        self._pending: deque[tuple[int, int, bool]] = deque()
        self._last_seq: int | None = None
        self._last_ts = 0
        self._last_frame: Int16Array | None = None
        self._frame_ts = RATES[src] // 50
        self.concealed = 0
        self.late_dropped = 0

    def transcode(self, packet: bytearray, header: RtpHeader, now: float) -> list[bytearray]:
        seq = header.sequence_number
        out: list[bytearray] = []
        if self._last_seq is not None:
            missing = (seq - self._last_seq - 1) & 0xFFFF
            if missing >= 0x8000:
                # Late or duplicate: the decoder state has moved on; the gap was already concealed.
                self.late_dropped += 1
                return out
            if 0 < missing <= MAX_CONCEALED and self._last_frame is not None:
                frame = self._last_frame
                for k in range(1, missing + 1):
                    frame = (frame // 2).astype(np.int16)
                    self.concealed += 1
                    self._push(
                        out,
                        frame,
                        (self._last_seq + k) & 0xFFFF,
                        (self._last_ts + k * self._frame_ts) & 0xFFFFFFFF,
                        False,
                        header,
                    )
        pcm = self._decode(bytes(packet[header.payload_start : header.payload_end]))
        if len(pcm):
            self._last_frame = pcm
            self._frame_ts = len(pcm)
            self._push(out, pcm, seq, header.timestamp, header.marker, header)
        self._last_seq = seq
        self._last_ts = header.timestamp
        return out

    def _push(
        self, out: list[bytearray], pcm: Int16Array, seq: int, ts: int, marker: bool, header: RtpHeader
    ) -> None:
        """Encode one frame; the packet keeps the input's payload type and SSRC for the rewriter."""
        if self._resample is not None:
            pcm = self._resample(pcm)
        self._pending.append((seq, ts, marker))
        pt = header.payload_type
        for payload in self._encode(pcm):
            if not self._pending:
                break
            p_seq, p_ts, p_marker = self._pending.popleft()
            packet = bytearray(12 + len(payload))
            RTP_HEADER.pack_into(packet, 0, 0x80, (0x80 if p_marker else 0) | pt, p_seq, p_ts, header.ssrc)
            packet[12:] = payload
            out.append(packet)
