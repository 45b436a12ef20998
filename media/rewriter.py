"""Rewriting one direction of a relayed RTP stream: SSRC, sequence number, timestamp and payload type.

A relay is an RTP translator (RFC 3550 §7) that hides the two legs from each other: each outgoing stream
has its own SSRC and its own sequence/timestamp space, so that when the incoming source changes (a
re-INVITE, the browser restarting its sender, a transfer) the receiver sees one continuous stream rather
than a new one it may discard while it re-probes (RFC 3550 §A.1 probation).

The mapping is an offset per source, not a renumbering per packet: losses and reordering upstream stay
visible downstream (honest gaps), duplicates stay duplicates, and nothing is buffered. On a source change
the new offsets continue from the last packet sent: sequence + 1, and a timestamp advanced by the wall
time since then (at least one frame), with the marker bit set to flag the discontinuity (RFC 3551 §4.1).
A sequence jump larger than ``MAX_DROPOUT`` within one source is treated like a source change (§A.1).

Clock rates may differ between the legs (telephone-event at 48000 on WebRTC ⇄ 8000 on the trunk, or the
transcoded path): timestamps are scaled by ``out_rate / in_rate`` relative to the source's first packet.
"""

from __future__ import annotations

import secrets
import struct

from media.rtp import RTP_HEADER

__all__ = ["StreamRewriter"]

MAX_DROPOUT = 3000
MAX_MISORDER = 100
_HALF_SEQ = 0x8000
_pack_into = RTP_HEADER.pack_into
_unpack_from = RTP_HEADER.unpack_from
_SEQ_TS = struct.Struct("!HI")


class StreamRewriter:
    """Maps one incoming RTP stream onto one outgoing stream (sans-I/O; fed packets and time)."""

    __slots__ = (
        "_in_base_ts",
        "_in_rate",
        "_in_ssrc",
        "_last_in_seq",
        "_last_out_seq",
        "_last_time",
        "_out_base_ts",
        "_out_rate",
        "_ratio_same",
        "_seq_offset",
        "_started",
        "dropped_payload_type",
        "frame_samples",
        "last_timestamp",
        "payload_types",
        "rewritten",
        "source_changes",
        "ssrc",
    )

    def __init__(
        self,
        payload_types: dict[int, int],
        *,
        ssrc: int | None = None,
        in_rate: int = 8000,
        out_rate: int = 8000,
        frame_samples: int | None = None,
        initial_sequence: int | None = None,
        initial_timestamp: int | None = None,
    ) -> None:
        #: Incoming payload type → outgoing payload type; others are dropped and counted.
        self.payload_types = payload_types
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._ratio_same = in_rate == out_rate
        self.frame_samples = frame_samples if frame_samples is not None else out_rate // 50
        # Random initial sequence and timestamp (RFC 3550 §5.1), as if a packet had just been sent.
        self._last_out_seq = (secrets.randbits(16) if initial_sequence is None else initial_sequence) - 1
        #: Timestamp of the newest packet sent (by sequence number): where a new source continues from.
        self.last_timestamp = secrets.randbits(32) if initial_timestamp is None else initial_timestamp
        self._in_ssrc = -1
        self._in_base_ts = 0
        self._out_base_ts = 0
        self._seq_offset = 0
        self._last_in_seq = 0
        self._last_time = 0.0
        self._started = False
        self.rewritten = 0
        self.dropped_payload_type = 0
        self.source_changes = 0

    def rewrite(self, packet: bytearray, now: float) -> bool:
        """Rewrite ``packet``'s header in place for the outgoing stream; False means drop it.

        ``packet`` must already have passed :func:`media.rtp.parse_rtp`. ``now`` is the arrival time in
        seconds on a monotonic clock.
        """
        first, second, seq, ts, ssrc = _unpack_from(packet, 0)
        out_pt = self.payload_types.get(second & 0x7F)
        if out_pt is None:
            self.dropped_payload_type += 1
            return False
        marker = second & 0x80
        if ssrc != self._in_ssrc:
            self._switch_source(ssrc, seq, ts, now)
            marker = 0x80
        else:
            delta = (seq - self._last_in_seq) & 0xFFFF
            if delta >= _HALF_SEQ:
                delta -= 0x10000
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                self._switch_source(ssrc, seq, ts, now)
                marker = 0x80
            elif delta > 0:
                self._last_in_seq = seq
        out_seq = (seq + self._seq_offset) & 0xFFFF
        elapsed = (ts - self._in_base_ts) & 0xFFFFFFFF
        if elapsed >= 0x80000000:
            elapsed -= 0x100000000
        if not self._ratio_same:
            elapsed = elapsed * self._out_rate // self._in_rate
        out_ts = (self._out_base_ts + elapsed) & 0xFFFFFFFF
        # Track the newest packet sent (by sequence), which the next source continues from.
        if ((out_seq - self._last_out_seq) & 0xFFFF) < _HALF_SEQ:
            self._last_out_seq = out_seq
            self.last_timestamp = out_ts
            self._last_time = now
        _pack_into(packet, 0, first, marker | out_pt, out_seq, out_ts, self.ssrc)
        self.rewritten += 1
        return True

    def _switch_source(self, ssrc: int, seq: int, ts: int, now: float) -> None:
        if self._started:
            self.source_changes += 1
            gap = round((now - self._last_time) * self._out_rate)
            advance = max(gap, self.frame_samples)
        else:
            advance = self.frame_samples if self._last_time else 0
            self._started = True
        self._in_ssrc = ssrc
        self._in_base_ts = ts
        self._out_base_ts = (self.last_timestamp + advance) & 0xFFFFFFFF
        self._seq_offset = (self._last_out_seq + 1 - seq) & 0xFFFF
        self._last_in_seq = seq

    @property
    def last_sequence(self) -> int:
        return self._last_out_seq & 0xFFFF

    def next_timestamp(self, now: float) -> tuple[int, int]:
        """Sequence number and timestamp for a packet we originate now (injected DTMF, PLC) in this stream.

        Keeps the stream continuous with relayed packets; the next relayed packet from the current source
        keeps its own mapping, so injected packets should come while the source is silent or be followed
        by a source change (which :meth:`restart` forces).
        """
        seq = (self._last_out_seq + 1) & 0xFFFF
        ts = (self.last_timestamp + max(round((now - self._last_time) * self._out_rate), 0)) & 0xFFFFFFFF
        self._last_out_seq = seq
        self.last_timestamp = ts
        self._last_time = now
        return seq, ts

    def restart(self) -> None:
        """Make the next relayed packet start a new mapping (after we injected packets into the stream)."""
        self._in_ssrc = -1
