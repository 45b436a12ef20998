"""The transcoding path: Opus ⇄ G.711 (and µ-law ⇄ A-law), one packet in, packets out.

Used only when the legs could not agree on a codec. Each direction has its own :class:`Transcoder` with
its own decoder and encoder state. Output packets keep the input's sequence number and timestamp (in the
*input* clock); the stream rewriter then maps them onto the outgoing stream and scales the timestamp,
exactly as for passthrough, so DTMF events and audio share one numbering.

The audio between decoder and encoder stays at 8 kHz, the G.711 leg's rate: libopus decodes straight to
8 kHz and encodes straight from it (its API takes 8-48 kHz; the RTP clock stays 48000 regardless, RFC
7587 §4.1). That spares our 48 kHz resampler both ways and lets libopus code narrow-band SILK, several
times cheaper than coding a 48 kHz signal that has nothing above 4 kHz (figures in :mod:`media.opus`).

Opus: libopus (see :mod:`media.opus`), mono, VoIP application, 20 ms frames, 24 kb/s and complexity 1 by
default (the measured trade-off is in :mod:`media.opus`), in-band
FEC on. G.711: the numpy tables of :mod:`media.g711`.

:func:`new_transcoder` is what calls use: the C version of this class (``media/_transcode.c``, same
output to the byte, tested) when the extension is built and libopus was loaded, so the C pump transcodes
without Python per packet; this class otherwise, and as the reference.

Packet-loss concealment: a gap of up to ``MAX_CONCEALED`` packets in the input is filled so the encoder
sees continuous audio; the generated packets take the missing sequence numbers (nothing else will), longer
gaps are left as gaps. From Opus, libopus conceals (its PLC) and recovers the packet just before the one
that arrived from that packet's FEC data, both at 8 kHz; from G.711 the last frame is repeated, halved in
level for each missing packet, so the far end hears a fade rather than a click.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from media import fastpath, g711
from media.opus import OpusDecoder, OpusEncoder
from media.rtp import RtpHeader, build_rtp

if TYPE_CHECKING:
    from media.relay import Transcoding

__all__ = [
    "OpusDecoder",
    "OpusEncoder",
    "Transcoder",
    "new_transcoder",
]  # the Opus classes live in media.opus

log = logging.getLogger(__name__)
Int16Array = npt.NDArray[np.int16]
MAX_CONCEALED = 5
RATES = {"pcmu": 8000, "pcma": 8000, "opus": 48000}


class Transcoder:
    """One direction: decode ``source`` → encode ``target`` (codec names as in SDP), at 8 kHz between."""

    def __init__(self, source: str, target: str, *, bitrate: int = 24000, complexity: int = 1) -> None:
        src, dst = source.lower(), target.lower()
        if src not in RATES or dst not in RATES or RATES[src] == RATES[dst] != 8000:
            raise ValueError(f"cannot transcode {source} to {target}")
        self.source, self.target = src, dst
        #: The rate of the audio between decoder and encoder: the G.711 side's.
        self.pcm_rate = min(RATES[src], RATES[dst])
        #: Input RTP clock ticks per PCM sample (6 for Opus in, 1 for G.711 in).
        self._ticks_per_sample = RATES[src] // self.pcm_rate
        self._decode: Callable[[bytes], Int16Array]
        self._opus: OpusDecoder | None = None
        if src == "opus":
            self._opus = OpusDecoder(self.pcm_rate)
            self._decode = self._opus.decode
        elif src == "pcmu":
            self._decode = g711.ulaw_decode
        else:
            self._decode = g711.alaw_decode
        self._encode: Callable[[Int16Array], list[bytes]]
        #: The Opus encoder when the target is Opus (its FEC follows the loss the receiver reports).
        self.opus_encoder: OpusEncoder | None = None
        if dst == "opus":
            self.opus_encoder = OpusEncoder(bitrate, complexity, self.pcm_rate)
            self._encode = self.opus_encoder.encode
        elif dst == "pcmu":
            self._encode = lambda s: [g711.ulaw_encode(s)]
        else:
            self._encode = lambda s: [g711.alaw_encode(s)]
        self._pending: deque[tuple[int, int, bool]] = deque()
        self._last_seq: int | None = None
        self._last_ts = 0
        self._last_frame: Int16Array | None = None
        self._frame_ts = RATES[src] // 50
        self.concealed = 0
        self.late_dropped = 0
        self.codec_errors = 0

    def adapt_to_loss(self, fraction_lost: float) -> None:
        """Follow the loss the receiver reports in RTCP (RFC 3550 §6.4.1 "fraction lost" about our stream)
        with the Opus encoder's FEC: at least 1 % (a little protection costs little), at most 25 % (past
        that FEC eats the primary encoding and the call is lost anyway). No-op when not encoding Opus."""
        if self.opus_encoder is not None:
            self.opus_encoder.set_expected_loss(max(1, min(25, round(fraction_lost * 100))))

    def transcode(self, packet: bytearray, header: RtpHeader, now: float) -> list[bytearray]:
        seq = header.sequence_number
        out: list[bytearray] = []
        payload = bytes(memoryview(packet)[header.payload_start : header.payload_end])  # one copy
        if self._last_seq is not None:
            missing = (seq - self._last_seq - 1) & 0xFFFF
            if missing >= 0x8000:
                # Late or duplicate: the decoder state has moved on; the gap was already concealed.
                self.late_dropped += 1
                return out
            if 0 < missing <= MAX_CONCEALED and self._last_frame is not None:
                self._conceal(out, missing, payload, header)
        pcm = self._decoded(payload)
        if len(pcm):
            self._last_frame = pcm
            self._frame_ts = len(pcm) * self._ticks_per_sample
            self._push(out, pcm, seq, header.timestamp, header.marker, header)
        else:  # a payload the codecs refuse (empty, odd sizes, garbage): dropped and counted
            self.codec_errors += 1
            self._pending.clear()
        self._last_seq = seq
        self._last_ts = header.timestamp
        return out

    def _decoded(self, payload: bytes) -> Int16Array:
        """The payload's audio, empty if it does not decode."""
        if not payload:
            return np.zeros(0, dtype=np.int16)
        g711.DECODE_CALLS.add(self._opus is not None)  # G.711 decoders count themselves
        try:
            return self._decode(payload)
        except Exception:  # PyAV's fallback raises on garbage; libopus and the tables do not
            return np.zeros(0, dtype=np.int16)

    def _conceal(self, out: list[bytearray], missing: int, payload: bytes, header: RtpHeader) -> None:
        """Fill ``missing`` lost packets before this one (see the module docstring)."""
        assert self._last_seq is not None and self._last_frame is not None
        frame = self._last_frame
        opus = self._opus if self._opus is not None and self._opus.native else None
        for k in range(1, missing + 1):
            if opus is None:
                frame = (frame // 2).astype(np.int16)
            elif k < missing:
                frame = opus.conceal(len(frame))
            else:
                frame = opus.recover(payload, len(frame))
            if not len(frame):  # libopus refused (a frame size it cannot conceal)
                self.codec_errors += 1
                return
            self.concealed += 1
            self._push(
                out,
                frame,
                (self._last_seq + k) & 0xFFFF,
                (self._last_ts + k * self._frame_ts) & 0xFFFFFFFF,
                False,
                header,
            )

    def _push(
        self, out: list[bytearray], pcm: Int16Array, seq: int, ts: int, marker: bool, header: RtpHeader
    ) -> None:
        """Encode one frame; the packet keeps the input's payload type and SSRC for the rewriter."""
        self._pending.append((seq, ts, marker))
        try:
            encoded = self._encode(pcm)
        except ValueError:  # no Opus framing for this many samples
            self.codec_errors += 1
            self._pending.clear()
            return
        pt = header.payload_type
        for payload in encoded:
            if not self._pending:
                break
            p_seq, p_ts, p_marker = self._pending.popleft()
            out.append(build_rtp(pt, p_seq, p_ts, header.ssrc, payload, p_marker))


def new_transcoder(source: str, target: str, *, bitrate: int = 24000, complexity: int = 1) -> Transcoding:
    """The transcoder for one direction of a call: the C one when the extension is built and libopus was
    loaded (the pump then transcodes the call's packets without Python, see :mod:`media.fastpath`), else
    :class:`Transcoder`. Both give the same packets."""
    native = fastpath.transcoder(source, target, bitrate=bitrate, complexity=complexity)
    return (
        native if native is not None else Transcoder(source, target, bitrate=bitrate, complexity=complexity)
    )
