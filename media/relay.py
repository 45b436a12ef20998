"""One call's relay between a WebRTC leg and a trunk leg: two :class:`MediaPath` objects, one per direction.

A path takes a clear-text RTP packet from one leg and hands it, rewritten, to the other. When both legs
agreed on the same codec (PCMU or PCMA) the path is **passthrough**: the payload is never looked at, only
the 12-byte header is rewritten in place (SSRC, sequence, timestamp, payload type — see
:mod:`media.rewriter`). Otherwise a :class:`media.transcoder.Transcoder` replaces the payload and the
rewriter still owns the header, with the clock-rate ratio applied to timestamps.

telephone-event packets (RFC 4733) are detected (digits reported once each), relayed with every
retransmission, their duration scaled when the clock rates differ, and their payload type translated.

The relay is sans-I/O apart from the send callables it is given; time comes in with every packet, and
RTCP reports are produced by :meth:`CallRelay.rtcp_reports`, which the asyncio edge calls on a timer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from media import fastpath
from media.dtmf import DtmfDetector, DtmfGenerator, scale_event_duration
from media.rtcp import LegStats, RtcpSession
from media.rtp import RtpHeader, build_rtp
from sdp import MediaParameters

__all__ = ["CallRelay", "MediaPath", "Transcoding"]

log = logging.getLogger(__name__)
Send = Callable[[bytes | bytearray], None]


class Transcoding(Protocol):
    """Replaces audio payloads; keeps sequence number and scales timestamp (see media.transcoder)."""

    def transcode(self, packet: bytearray, header: RtpHeader, now: float) -> list[bytearray]: ...


class MediaPath:
    """One direction of one call (sans-I/O apart from ``send``)."""

    __slots__ = (
        "_injecting",
        "_muted",
        "audio_pt",
        "detector",
        "event_pt",
        "event_scale",
        "out_audio_pt",
        "out_codec",
        "out_event_pt",
        "out_rate",
        "reception",
        "rewriter",
        "route",
        "send",
        "sending",
        "suppressed",
        "transcoder",
    )

    def __init__(
        self,
        source: MediaParameters,
        target: MediaParameters,
        send: Send,
        rx_rtcp: RtcpSession,
        tx_rtcp: RtcpSession,
        on_digit: Callable[[str, int], None],
        transcoder: Transcoding | None,
    ) -> None:
        in_codec, out_codec = source.codec, target.codec
        in_event, out_event = source.telephone_event, target.telephone_event
        #: Incoming payload types are the ones we put in our description for that leg.
        self.audio_pt = in_codec.local_payload_type
        # Events are detected even when the other leg cannot take them (they are then dropped after).
        self.event_pt = in_event.local_payload_type if in_event else -1
        self.out_event_pt = out_event.payload_type if out_event else -1
        self.out_rate = out_codec.clock_rate
        self.out_codec = out_codec.name
        self.out_audio_pt = out_codec.payload_type
        payload_types = {self.audio_pt: out_codec.payload_type}
        if in_event and out_event:
            payload_types[in_event.local_payload_type] = out_event.payload_type
        if source.comfort_noise and target.comfort_noise and transcoder is None:
            payload_types[source.comfort_noise.local_payload_type] = target.comfort_noise.payload_type
        self.event_scale: tuple[int, int] | None = (
            (out_codec.clock_rate, in_codec.clock_rate)
            if in_codec.clock_rate != out_codec.clock_rate
            else None
        )
        self.rewriter = fastpath.Rewriter(
            payload_types, ssrc=tx_rtcp.ssrc, in_rate=in_codec.clock_rate, out_rate=out_codec.clock_rate
        )
        self.detector = DtmfDetector(on_digit)
        self.transcoder = transcoder
        self.send = send
        #: The legs' RTCP statistics, counted here per packet (called directly: one Python frame fewer).
        self.reception = rx_rtcp.reception
        self.sending = tx_rtcp.sending
        self._injecting = False
        self._muted = False
        self.suppressed = 0
        #: The C leg this direction's packets arrive on, when the pump relays them (media/fastpath.py).
        self.route: Any = None

    @property
    def passthrough(self) -> bool:
        return self.transcoder is None

    @property
    def injecting(self) -> bool:
        """Set while we send packets of our own on this path (digits, a tone): relayed audio is held back."""
        return self._injecting

    @injecting.setter
    def injecting(self, value: bool) -> None:
        self._injecting = value
        self._sync_route()

    @property
    def muted(self) -> bool:
        """Set when negotiation says this direction carries no media (hold: RFC 3264 §8.4)."""
        return self._muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self._muted = value
        self._sync_route()

    @property
    def transcoded_in_c(self) -> bool:
        """Whether the pump can transcode this direction itself (the C transcoder, media/_transcode.c)."""
        native = fastpath.NativeTranscoder
        return native is not None and isinstance(self.transcoder, native)

    @property
    def relayable_in_c(self) -> bool:
        """Whether the pump can carry this direction's audio: passthrough, or the C transcoder."""
        return self.transcoder is None or self.transcoded_in_c

    def _sync_route(self) -> None:
        """The C pump relays this direction's packets only while Python would do the same with them:
        passthrough, or transcoding with the C transcoder (the same object either way), and neither
        muted nor injecting."""
        if self.route is not None:
            self.route.fast = self.relayable_in_c and not self._injecting and not self._muted

    def forward(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        """The per-packet hot path. The legs call it directly (``CallRelay.from_web``/``from_trunk`` are
        the same thing one call further away); the header is unpacked once into locals, and audio in
        passthrough goes straight to the rewriter and ``send`` without a helper call."""
        _marker, pt, seq, ts, ssrc, start, end = header
        self.reception.on_rtp_received(ssrc, seq, ts, now)
        if self._injecting or self._muted:
            self.suppressed += 1
            return
        if pt == self.event_pt:
            self.detector.feed(ts, packet[start:end])
            scale = self.event_scale
            if scale is not None and end - start >= 4:
                scale_event_duration(packet, start, *scale)
        elif pt == self.audio_pt and self.transcoder is not None:
            for out in self.transcoder.transcode(packet, header, now):
                self._emit(out, now)
            return
        rewriter = self.rewriter
        if rewriter.rewrite(packet, now):
            self.send(packet)
            self.sending.on_rtp_sent(rewriter.last_timestamp, len(packet) - 12, now)

    def _emit(self, packet: bytearray, now: float) -> None:
        rewriter = self.rewriter
        if rewriter.rewrite(packet, now):
            self.send(packet)
            self.sending.on_rtp_sent(rewriter.last_timestamp, len(packet) - 12, now)

    def inject(
        self, payload_type: int, payload: bytes, marker: bool, now: float, timestamp: int | None = None
    ) -> int:
        """Send one packet we originate (a tone's frame, an event's), continuing this path's stream
        (RFC 3550 §5.1). ``timestamp`` keeps an event's fixed one (RFC 4733 §2.5.1.2); returns the one used."""
        seq, ts = self.rewriter.next_timestamp(now)
        if timestamp is None:
            timestamp = ts
        self.send(build_rtp(payload_type, seq, timestamp, self.rewriter.ssrc, payload, marker))
        self.sending.on_rtp_sent(timestamp, len(payload), now)
        return timestamp


class CallRelay:
    """The two paths of a call plus per-leg RTCP, digits and counters.

    ``web`` and ``trunk`` are the negotiated parameters of each leg (from :mod:`sdp.offer_answer`).
    """

    def __init__(
        self,
        web: MediaParameters,
        trunk: MediaParameters,
        send_web: Send,
        send_trunk: Send,
        on_digit: Callable[[str, str], None] | None = None,
        transcoders: tuple[Transcoding | None, Transcoding | None] = (None, None),
        *,
        web_ssrc: int | None = None,
        trunk_ssrc: int | None = None,
    ) -> None:
        self.web = web
        self.trunk = trunk
        self.on_digit = on_digit
        #: Our SSRC towards each leg; the WebRTC one is announced in our SDP (a=ssrc, RFC 5576).
        self.web_rtcp = _rtcp_session(web_ssrc, web.codec.clock_rate)
        self.trunk_rtcp = _rtcp_session(trunk_ssrc, trunk.codec.clock_rate)
        #: WebRTC → trunk.
        self.to_trunk = MediaPath(
            web, trunk, send_trunk, self.web_rtcp, self.trunk_rtcp, self._digit_from("webrtc"), transcoders[0]
        )
        #: Trunk → WebRTC.
        self.to_web = MediaPath(
            trunk, web, send_web, self.trunk_rtcp, self.web_rtcp, self._digit_from("trunk"), transcoders[1]
        )

        self.apply_directions()

    def apply_directions(self) -> None:
        """Mute each path the negotiated directions forbid (a held leg is sent nothing, RFC 3264 §8.4)."""
        for path, muted in (
            (self.to_trunk, not (self.trunk.sends and self.web.receives)),
            (self.to_web, not (self.web.sends and self.trunk.receives)),
        ):
            if path.muted and not muted:
                # Resuming after hold: continue the stream (sequence + 1, timestamp by wall time, marker)
                # rather than jumping by every packet that was held back.
                path.rewriter.restart()
            path.muted = muted

    @property
    def passthrough(self) -> bool:
        return self.to_trunk.passthrough and self.to_web.passthrough

    @property
    def in_c(self) -> bool:
        """Whether the C pump carries this call's audio both ways (see :meth:`route_in_c`)."""
        return all(path.route is not None and path.relayable_in_c for path in (self.to_trunk, self.to_web))

    def route_in_c(self, web: Any, trunk: Any) -> None:
        """Let the C pump relay this call's packets (media/fastpath.py): ``web`` and ``trunk`` are the legs'
        handles in the pump. Each direction runs in C while it is passthrough or transcoded by the C
        transcoder, not muted and not injecting; otherwise packets come up to :meth:`MediaPath.forward`
        as before. Events (RFC 4733) always come up: digits are reported from Python."""
        for path, arriving, leaving, rx, tx in (
            (self.to_trunk, web, trunk, self.web_rtcp, self.trunk_rtcp),
            (self.to_web, trunk, web, self.trunk_rtcp, self.web_rtcp),
        ):
            arriving.set_route(
                out=leaving,
                rewriter=path.rewriter,
                reception=rx.reception,
                sending=tx.sending,
                event_pt=path.event_pt,
                transcoder=path.transcoder if path.transcoded_in_c else None,
                audio_pt=path.audio_pt,
            )
            path.route = arriving
            path._sync_route()

    def detach(self) -> None:
        """This relay is being replaced (new codecs): its paths no longer steer the C legs."""
        for path in (self.to_trunk, self.to_web):
            if path.route is not None:
                path.route.fast = False
                path.route = None

    def _digit_from(self, leg: str) -> Callable[[str, int], None]:
        def report(digit: str, timestamp: int) -> None:
            if self.on_digit is not None:
                self.on_digit(leg, digit)

        return report

    def from_web(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        self.to_trunk.forward(packet, header, now)

    def from_trunk(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        self.to_web.forward(packet, header, now)

    def rtcp_from_web(self, data: bytes, now: float) -> None:
        self.web_rtcp.on_rtcp_received(data, now)

    def rtcp_from_trunk(self, data: bytes, now: float) -> None:
        self.trunk_rtcp.on_rtcp_received(data, now)

    def rtcp_reports(self, now: float) -> tuple[bytes, bytes]:
        """Compound reports to send now: (to the WebRTC leg, to the trunk leg) (RFC 3550 §6.4)."""
        return self.web_rtcp.build_report(now), self.trunk_rtcp.build_report(now)

    def dtmf_packets(
        self, leg: str, digit: str, duration_ms: int = 160
    ) -> tuple[MediaPath, list[tuple[float, bool, bytes]]]:
        """The path towards ``leg`` and the event packets for one digit (RFC 4733 §2.5.1)."""
        path = self.to_web if leg == "webrtc" else self.to_trunk
        if path.out_event_pt < 0:
            raise ValueError(f"no telephone-event negotiated on the {leg} leg")
        return path, DtmfGenerator(path.out_rate).packets(digit, duration_ms)

    def stats(self) -> dict[str, LegStats]:
        return {"webrtc": self.web_rtcp.stats, "trunk": self.trunk_rtcp.stats}


def _rtcp_session(ssrc: int | None, clock_rate: int) -> RtcpSession:
    return RtcpSession(
        ssrc=ssrc or secrets.randbits(32),
        clock_rate=clock_rate,
        reception=fastpath.Reception(clock_rate),
        sending=fastpath.Sending(),
    )
