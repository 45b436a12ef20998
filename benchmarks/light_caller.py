"""A light WebRTC caller for load tests: real ICE, DTLS and SRTP, without a codec.

Element's browser encodes audio; a load generator that did the same for hundreds of calls would measure
itself. This caller uses the bridge's own :class:`media.webrtc.WebRtcLeg` in the offerer role (aioice for
ICE, aiortc for DTLS-SRTP keys, the SRTP tap for media), offers PCMU and telephone-event as a browser
would, and sends pre-built 20 ms PCMU packets whose payload carries a per-call packet counter and the
send time. The trunk side echoes (``sipp -rtp_echo``) and the relay rewrites only the RTP header
(RFC 3550 §5.1), so each returning payload says which packet came back and after how long.
"""

from __future__ import annotations

import secrets
import struct
import time

from media.rtp import RtpHeader
from media.webrtc import WebRtcLeg
from sdp import SessionDescription
from sdp.offer_answer import PCMU, TELEPHONE_EVENT, build_offer, process_answer

__all__ = ["LightCaller"]

_STAMP = struct.Struct("!Id")  # packet counter, send time (perf_counter)
_SILENCE = b"\xff" * (160 - _STAMP.size)  # µ-law silence fills the rest of a 20 ms frame


class LightCaller:
    """One call's browser side. ``offer()`` → (``m.call.invite``) → ``answered(sdp)`` → ``send()`` every 20 ms."""

    def __init__(self) -> None:
        self.leg = WebRtcLeg(self._received, bind_addresses=("127.0.0.1",), max_packets_per_second=1000)
        self.ssrc = secrets.randbits(32)
        self.sent = 0
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        #: Packet counter → round-trip seconds, for every packet that came back.
        self.returned: dict[int, float] = {}
        self._offer: SessionDescription | None = None

    async def offer(self) -> str:
        await self.leg.gather(controlling=True)  # the offerer controls (RFC 8445 §6.1.1)
        host, port = self.leg.default_address
        self._offer = build_offer(
            address=host,
            port=port,
            codecs=[PCMU, TELEPHONE_EVENT(8000, 101)],
            proto="UDP/TLS/RTP/SAVPF",
            rtcp_mux=True,
            ptime=None,
            media_attributes=[
                ("mid", "0"),
                *self.leg.local_attributes("actpass"),
                ("ssrc", f"{self.ssrc} cname:load"),
            ],
            session_attributes=[("group", "BUNDLE 0")],
        )
        return str(self._offer)

    def answered(self, sdp: str) -> None:
        """The bridge's ``m.call.answer``: start ICE (we offered, so we control, RFC 8445 §6.1.1) and DTLS."""
        assert self._offer is not None
        answer = SessionDescription.parse(sdp)
        process_answer(self._offer, answer)
        media = next(m for m in answer.media if m.media == "audio" and m.port != 0)
        self.leg.start(answer, media, controlling=True)

    def send(self) -> None:
        """One 20 ms PCMU packet (RFC 3551 §4.5.14: 160 samples at 8 kHz)."""
        header = struct.pack(
            "!BBHII", 0x80, 0, self.seq, self.timestamp & 0xFFFFFFFF, self.ssrc
        )  # RFC 3550 §5.1, payload type 0
        self.leg.send_rtp(header + _STAMP.pack(self.sent, time.perf_counter()) + _SILENCE)
        self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp += 160

    def _received(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        if header.payload_type != 0 or len(packet) < header.payload_start + _STAMP.size:
            return
        counter, sent_at = _STAMP.unpack_from(packet, header.payload_start)
        self.returned.setdefault(counter, time.perf_counter() - sent_at)

    def lost_between(self, first: int, last: int) -> int:
        """Packets numbered ``first``…``last - 1`` that never came back."""
        return sum(1 for n in range(first, last) if n not in self.returned)

    async def close(self) -> None:
        await self.leg.close()
