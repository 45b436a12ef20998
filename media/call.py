"""A bridged call's media, in one process: both legs, their SDP, the relay, DTMF and RTCP timers.

This is the asyncio edge around the sans-I/O pieces. Two ways in, matching the two call directions:

* **Matrix → phone** (:meth:`MediaCall.outbound`): the browser's offer is answered at once (preferring a
  codec the trunk will take as is, so the call can be passthrough), and an offer is made for the trunk;
  the trunk's answer (:meth:`set_trunk_remote_sdp`) completes the relay.
* **Phone → Matrix** (:meth:`MediaCall.inbound`): the trunk's offer is answered at once and a WebRTC
  offer is made listing the trunk's codec first; the browser's answer (:meth:`set_webrtc_answer`)
  completes the relay.

Events go to ``on_event(kind, data)``: ``"digit"`` ``{"leg", "digit"}``, ``"connected"`` ``{"leg":
"webrtc"}`` (ICE and DTLS are up), ``"closed"`` ``{"reason"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiortc import RTCIceServer

from media import fastpath
from media.relay import CallRelay, MediaPath, Transcoding
from media.rtp import RtpHeader
from media.tones import WARNING, Cadence, tone_frames
from media.trunk import PortRange, TrunkLeg
from media.webrtc import WebRtcLeg
from sdp import (
    CN,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    MediaDescription,
    MediaParameters,
    NegotiationError,
    SessionDescription,
    answer_offer,
    build_offer,
    process_answer,
)

__all__ = ["MediaCall", "MediaConfig", "OutboundSdp", "PreparedCall", "outbound_sdp"]

log = logging.getLogger(__name__)
EventCallback = Callable[[str, dict[str, Any]], None]
#: Our Opus towards browsers. The trunk side is G.711, so there is nothing above 4 kHz to send and no use
#: in receiving more: ``maxplaybackrate``/``sprop-maxcapturerate`` 8000 (RFC 7587 §7.1) let the browser
#: code narrow-band, fewer bits for it to send and for our decoder to work through.
OPUS_NARROWBAND = replace(OPUS, fmtp=f"{OPUS.fmtp};maxplaybackrate=8000;sprop-maxcapturerate=8000")
_CODECS = {"PCMU": PCMU, "PCMA": PCMA, "opus": OPUS_NARROWBAND}


@dataclass
class MediaConfig:
    """Media settings (the bridge's ``media:`` config section maps onto this)."""

    #: Address the trunk RTP sockets bind to and put in SDP.
    trunk_bind_address: str = "127.0.0.1"
    #: Address announced in trunk SDP if different (behind 1:1 NAT); defaults to the bind address.
    trunk_public_address: str | None = None
    #: Latch trunk media only to the IP address the trunk's SDP announces (media/trunk.py).
    trunk_strict_source: bool = False
    #: Even-port range for trunk RTP (RTCP on RTP+1); 0/0 lets the OS choose.
    rtp_port_min: int = 0
    rtp_port_max: int = 0
    #: Addresses for WebRTC host candidates.
    webrtc_bind_addresses: tuple[str, ...] = ("127.0.0.1",)
    #: STUN/TURN servers as ``{"urls": ..., "username": ..., "credential": ...}``; none by default.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    #: Codec preference per leg; G.711 first so calls are passthrough when both legs agree.
    webrtc_codecs: tuple[str, ...] = ("PCMU", "PCMA", "opus")
    trunk_codecs: tuple[str, ...] = ("PCMU", "PCMA")
    max_packets_per_second: float = 400.0
    rtcp_interval: float = 5.0
    connect_timeout: float = 30.0
    opus_bitrate: int = 24000
    #: libopus encoder complexity 0-10: the transcoding path's main cost (see media/opus.py).
    opus_complexity: int = 1
    #: Offer Matrix clients only TURN-relayed candidates (needs a TURN server in ``ice_servers``).
    ice_relay_only: bool = False
    #: UDP ports for WebRTC host candidates (inclusive); 0/0 lets the OS choose.
    webrtc_port_min: int = 0
    webrtc_port_max: int = 0
    #: Calls each worker keeps bound ahead of need (:mod:`media.spares`); 0 binds every call's legs
    #: during its setup.
    spare_calls: int = 0

    def rtc_ice_servers(self) -> list[RTCIceServer]:
        return [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.ice_servers
        ]


def _with_events(codecs: list[Codec], te_pts: dict[int, int]) -> list[Codec]:
    """Append telephone-event at every clock rate used, and CN for 8 kHz (RFC 4733 §2.1, RFC 3389)."""
    rates = sorted({c.clock_rate for c in codecs}, reverse=True)
    extra = [TELEPHONE_EVENT(rate, te_pts.get(rate, 101)) for rate in rates]
    return [*codecs, *extra]


def _codecs(names: Sequence[str], prefer: str | None = None) -> list[Codec]:
    """Our codecs by their config names, in that order but with ``prefer`` (the codec already in use, or
    the other leg's: passthrough needs no transcoder) first."""
    codecs = [_CODECS[n] for n in names if n in _CODECS]
    if prefer is not None:
        codecs.sort(key=lambda c: c.name.lower() != prefer.lower())
    return codecs


def _offered_events(media: Iterable[MediaDescription]) -> dict[int, int]:
    """The telephone-event payload type the offer gives each clock rate (answered with the same)."""
    return {
        m.clock_rate: m.payload_type
        for description in media
        for m in description.rtpmaps().values()
        if m.encoding.lower() == "telephone-event"
    }


def _same_codecs(a: MediaParameters, b: MediaParameters) -> bool:
    key = (a.codec.name.lower(), a.codec.payload_type, a.codec.local_payload_type, a.telephone_event)
    return key == (b.codec.name.lower(), b.codec.payload_type, b.codec.local_payload_type, b.telephone_event)


@dataclass(frozen=True)
class PreparedCall:
    """The parts of a prepared call (:meth:`MediaCall.prepare`) its outbound SDP is built from: a media
    worker sends them to the bridge process, which can then make both SDPs of a call's setup itself."""

    call_id: str
    #: Default candidate's address and port (RFC 8839 §4.2.1.2).
    web_address: tuple[str, int]
    #: Our media-level attributes in a WebRTC answer: ICE, DTLS (``setup:active``), msid, ssrc.
    web_attributes: tuple[tuple[str, str | None], ...]
    trunk_port: int


@dataclass(frozen=True)
class OutboundSdp:
    webrtc_offer: SessionDescription
    #: The offer's media section we accepted.
    accepted: MediaDescription
    webrtc_answer: SessionDescription
    web_params: MediaParameters
    trunk_offer: SessionDescription


def outbound_sdp(
    config: MediaConfig, call: PreparedCall, webrtc_offer: str, session_ids: tuple[str, str] | None = None
) -> OutboundSdp:
    """Matrix → phone: our answer to the browser's offer (preferring a codec the trunk takes as is, so the
    call can be passthrough) and our offer to the trunk. No I/O and, given ``session_ids`` (the ``o=``
    session ids of the answer and the offer, RFC 4566 §5.2), the same result in any process.
    Raises ``SdpParseError`` or ``NegotiationError``."""
    webrtc_id, trunk_id = session_ids or (None, None)
    offer = SessionDescription.parse(webrtc_offer)
    host, port = call.web_address
    answer, params = answer_offer(
        offer,
        address=host,
        port=port,
        codecs=[*_with_events(_codecs(config.webrtc_codecs), _offered_events(offer.media)), CN],
        media_attributes=call.web_attributes,
        session_attributes=[("msid-semantic", " WMS telebridge")],
        session_id=webrtc_id,
    )
    # The section we accepted is the one our answer gives a port (RFC 3264 §6).
    accepted = next(m for m, a in zip(offer.media, answer.media, strict=True) if a.port != 0)
    # Offer the trunk the browser's codec first when it is one the trunk may take as is.
    trunk_codecs = _codecs(config.trunk_codecs, prefer=params.codec.name)
    trunk_offer = build_offer(
        address=config.trunk_public_address or config.trunk_bind_address,
        port=call.trunk_port,
        codecs=[*trunk_codecs, TELEPHONE_EVENT(8000, 101)],
        session_id=trunk_id,
    )
    return OutboundSdp(offer, accepted, answer, params, trunk_offer)


class MediaCall:
    """One call's media. Build with :meth:`outbound` or :meth:`inbound`."""

    def __init__(self, config: MediaConfig, on_event: EventCallback | None = None) -> None:
        self.config = config
        self.on_event = on_event or (lambda kind, data: None)
        self.call_id = secrets.token_hex(8)
        self.web_ssrc = secrets.randbits(32)
        self.trunk_ssrc = secrets.randbits(32)
        self.relay: CallRelay | None = None
        self.web_params: MediaParameters | None = None
        self.trunk_params: MediaParameters | None = None
        self.webrtc_local_sdp: SessionDescription | None = None
        self.trunk_local_sdp: SessionDescription | None = None
        self._trunk_offer_sent = False
        self.closed = False
        self.dropped_before_ready = 0
        self.web = WebRtcLeg(
            self._not_ready,
            None,
            self._web_closed,
            bind_addresses=config.webrtc_bind_addresses,
            ice_servers=config.rtc_ice_servers(),
            max_packets_per_second=config.max_packets_per_second,
            connect_timeout=config.connect_timeout,
            relay_only=config.ice_relay_only,
            port_range=(config.webrtc_port_min, config.webrtc_port_max),
        )
        self.web.on_connected = self._web_connected
        self.trunk: TrunkLeg | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        #: One injection (digits or a tone) per call at a time.
        self._inject_lock = asyncio.Lock()
        self._close_task: asyncio.Future[None] | None = None

    def _not_ready(self, packet: bytearray, header: RtpHeader, now: float) -> None:
        self.dropped_before_ready += 1

    def _web_connected(self) -> None:
        self._route_in_c()
        self.on_event("connected", {"leg": "webrtc"})

    def _route_in_c(self) -> None:
        """Once the relay exists and both legs can go, let the C pump carry this call's packets
        (media/fastpath.py); called when the relay is (re)built and when the WebRTC leg connects,
        whichever comes last."""
        pump = fastpath.pump()
        if pump is None or self.relay is None or self.trunk is None or self.closed:
            return
        web = self.web.offload(pump)
        trunk = self.trunk.offload(pump)
        if web is not None and trunk is not None:
            self.relay.route_in_c(web, trunk)

    async def _open_trunk(self) -> None:
        c = self.config
        self.trunk = await TrunkLeg.open(
            PortRange(c.trunk_bind_address, c.rtp_port_min, c.rtp_port_max),
            self._not_ready,
            max_packets_per_second=c.max_packets_per_second,
            strict_source=c.trunk_strict_source,
        )

    @property
    def _trunk_address(self) -> str:
        return self.config.trunk_public_address or self.config.trunk_bind_address

    def _webrtc_attributes(self, setup: str) -> list[tuple[str, str | None]]:
        return [
            *self.web.local_attributes(setup),
            ("msid", "telebridge telebridge-audio"),
            ("ssrc", f"{self.web_ssrc} cname:telebridge"),
        ]

    # Both directions -------------------------------------------------------------------------------
    @classmethod
    async def prepare(cls, config: MediaConfig) -> MediaCall:
        """A call with both legs bound and nothing negotiated: WebRTC candidates gathered (host ones, and
        STUN/TURN ones when configured) and the trunk's RTP/RTCP ports open. Everything that awaits in a
        call's setup happens here; what is left (:meth:`answer_webrtc_offer`, :meth:`answer_trunk_offer`)
        runs in one go, so a worker can bind a few calls ahead of need (:class:`media.spares.SpareCalls`)."""
        call = cls(config)
        try:
            await call.web.gather()
            await call._open_trunk()
        except BaseException:
            await call.close("setup failed")
            raise
        return call

    @classmethod
    async def _set_up(
        cls, config: MediaConfig, answer: Callable[[MediaCall], None], on_event: EventCallback | None
    ) -> MediaCall:
        """A call from :meth:`prepare` on which ``answer`` answers the first offer (closed if it fails)."""
        call = await cls.prepare(config)
        try:
            answer(call)
        except BaseException:
            await call.close("setup failed")
            raise
        if on_event is not None:
            call.on_event = on_event
        return call

    # Matrix → phone --------------------------------------------------------------------------------
    @classmethod
    async def outbound(
        cls, config: MediaConfig, webrtc_offer: str, on_event: EventCallback | None = None
    ) -> MediaCall:
        """Answer the browser's offer; ``webrtc_local_sdp`` is the answer, ``trunk_local_sdp`` the offer."""
        return await cls._set_up(config, lambda call: call.answer_webrtc_offer(webrtc_offer), on_event)

    def answer_webrtc_offer(self, webrtc_offer: str, session_ids: tuple[str, str] | None = None) -> None:
        """On a call from :meth:`prepare`: answer the browser's offer and make the trunk offer
        (:func:`outbound_sdp`, with these SDP session ids if given). On an error the call is left for the
        caller to :meth:`close`."""
        sdp = outbound_sdp(self.config, self.describe(), webrtc_offer, session_ids)
        self.web_params = sdp.web_params
        self.webrtc_local_sdp = sdp.webrtc_answer
        self.web.start(sdp.webrtc_offer, sdp.accepted, controlling=False)
        self.trunk_local_sdp = sdp.trunk_offer
        self._start_rtcp()

    def describe(self) -> PreparedCall:
        """What this call's outbound SDP is built from (:func:`outbound_sdp`)."""
        assert self.trunk is not None
        return PreparedCall(
            self.call_id,
            self.web.default_address,
            tuple(self._webrtc_attributes("active")),
            self.trunk.local_port,
        )

    def set_trunk_remote_sdp(self, sdp: str) -> None:
        """The trunk's answer to our offer: the first one (outbound calls) or to a :meth:`trunk_reoffer`."""
        assert self.trunk_local_sdp is not None and self.trunk is not None
        params = process_answer(self.trunk_local_sdp, SessionDescription.parse(sdp))
        self._apply_trunk(params)

    def update_trunk_offer(self, sdp: str) -> str:
        """A new offer from the trunk (re-INVITE or UPDATE: hold, resume, new address or codec); returns
        our answer. RFC 3264 §8: same session id, version + 1; §8.4: a held stream is sent nothing."""
        assert self.trunk is not None and self.trunk_local_sdp is not None
        offer = SessionDescription.parse(sdp)
        answer, params = answer_offer(
            offer,
            address=self._trunk_address,
            port=self.trunk.local_port,
            codecs=[*_with_events(self._trunk_codecs_now(), {}), CN],
            rtcp_mux=False,
            session_id=self.trunk_local_sdp.origin.session_id,
        )
        answer.origin.session_version = self.trunk_local_sdp.origin.session_version + 1
        self.trunk_local_sdp = answer
        self._apply_trunk(params)
        return str(answer)

    def trunk_reoffer(self, direction: str = "sendrecv") -> str:
        """A new offer for the trunk (our re-INVITE): e.g. ``"sendonly"`` to hold it when the Matrix side
        holds, ``"sendrecv"`` to resume. Same codec, events, address and port; answer with
        :meth:`set_trunk_remote_sdp`."""
        assert self.trunk is not None and self.trunk_local_sdp is not None
        current = self.trunk_params.codec if self.trunk_params else None
        codecs = self._trunk_codecs_now()
        if current is not None:
            codecs = [c for c in codecs if c.name.lower() == current.name.lower()] or codecs
        events = self.trunk_params.telephone_event if self.trunk_params else None
        offer = build_offer(
            address=self._trunk_address,
            port=self.trunk.local_port,
            codecs=[*codecs, TELEPHONE_EVENT(8000, events.local_payload_type if events else 101)],
            direction=direction,
            session_id=self.trunk_local_sdp.origin.session_id,
        )
        offer.origin.session_version = self.trunk_local_sdp.origin.session_version + 1
        self.trunk_local_sdp = offer
        return str(offer)

    def _trunk_codecs_now(self) -> list[Codec]:
        current = self.trunk_params.codec.name if self.trunk_params is not None else None
        return _codecs(self.config.trunk_codecs, prefer=current)

    def _apply_trunk(self, params: MediaParameters) -> None:
        """New trunk parameters: keep the relay (and its streams' numbering) unless the codec changed."""
        assert self.trunk is not None
        previous = self.trunk_params
        self.trunk_params = params
        if params.remote_port and (params.remote_host, params.remote_port) != self.trunk.remote:
            self.trunk.set_remote(params.remote_host, params.remote_port, params.remote_rtcp_port)
        if self.web_params is None:
            return
        if self.relay is not None and previous is not None and _same_codecs(previous, params):
            self.relay.trunk = params
            self.relay.apply_directions()
        else:
            self._complete()

    # Phone → Matrix --------------------------------------------------------------------------------
    @classmethod
    async def inbound(
        cls, config: MediaConfig, trunk_offer: str, on_event: EventCallback | None = None
    ) -> MediaCall:
        """Answer the trunk's offer; ``trunk_local_sdp`` is that answer, ``webrtc_local_sdp`` our offer."""
        return await cls._set_up(config, lambda call: call.answer_trunk_offer(trunk_offer), on_event)

    def answer_trunk_offer(self, trunk_offer: str) -> None:
        """On a call from :meth:`prepare`: answer the trunk's offer and make the WebRTC offer. On an error the
        call is left for the caller to :meth:`close`."""
        config = self.config
        offer = SessionDescription.parse(trunk_offer)
        # We make the WebRTC offer, so we control ICE (RFC 8445 §6.1.1) from the moment it leaves: the
        # browser starts its checks before its answer reaches us (see WebRtcLeg.gather).
        self.web._ice._connection.ice_controlling = True
        assert self.trunk is not None
        codecs = _codecs(config.trunk_codecs)
        answer, params = answer_offer(
            offer,
            address=self._trunk_address,
            port=self.trunk.local_port,
            codecs=[*_with_events(codecs, {}), CN],
            rtcp_mux=False,
        )
        self.trunk_params = params
        self.trunk_local_sdp = answer
        self.trunk.set_remote(params.remote_host, params.remote_port, params.remote_rtcp_port)
        web_codecs = _codecs(config.webrtc_codecs, prefer=params.codec.name)
        host, port = self.web.default_address
        self.webrtc_local_sdp = build_offer(
            address=host,
            port=port,
            codecs=_with_events(web_codecs, {48000: 110, 8000: 126}),
            proto="UDP/TLS/RTP/SAVPF",
            rtcp_mux=True,
            ptime=None,
            media_attributes=[("mid", "0"), *self._webrtc_attributes("actpass")],
            session_attributes=[("group", "BUNDLE 0"), ("msid-semantic", " WMS telebridge")],
        )
        self._start_rtcp()

    def set_webrtc_answer(self, sdp: str) -> None:
        """The browser's answer to our offer (inbound calls)."""
        assert self.webrtc_local_sdp is not None
        answer = SessionDescription.parse(sdp)
        params = process_answer(self.webrtc_local_sdp, answer)
        self.web_params = params
        media = next(m for m in answer.media if m.media == "audio" and m.port != 0)
        self.web.start(answer, media, controlling=True)
        self._complete()

    def add_webrtc_candidate(self, candidate: str | None) -> None:
        """A trickled remote candidate (``m.call.candidates``), or None/"" for end-of-candidates."""
        self.web.add_remote_candidate(candidate or None)

    def update_webrtc_offer(self, sdp: str) -> str:
        """A new offer from the browser (``m.call.negotiate``: hold, resume) on the same ICE/DTLS session;
        returns our answer. An ICE restart (new ufrag) is refused with ``NegotiationError``."""
        assert self.webrtc_local_sdp is not None
        offer = SessionDescription.parse(sdp)
        audio = next((m for m in offer.media if m.media == "audio" and m.port != 0), None)
        if audio is None:
            raise NegotiationError("re-offer has no audio stream")
        ufrag = audio.get("ice-ufrag") or offer.get("ice-ufrag")
        if ufrag != self.web._ice._connection.remote_username:
            raise NegotiationError("ICE restart is not supported")
        # Keep our DTLS role (RFC 8842 §5.5): a DTLS server answers passive, a client active.
        setup = "passive" if self.web._dtls._role == "server" else "active"
        current = self.web_params.codec.name if self.web_params is not None else None
        codecs = _codecs(self.config.webrtc_codecs, prefer=current)
        offered_te = _offered_events([audio])
        answer, params = answer_offer(
            offer,
            address=self.web.default_address[0],
            port=self.web.default_address[1],
            codecs=[*_with_events(codecs, offered_te), CN],
            media_attributes=self._webrtc_attributes(setup),
            session_attributes=[("msid-semantic", " WMS telebridge")],
            session_id=self.webrtc_local_sdp.origin.session_id,
        )
        answer.origin.session_version = self.webrtc_local_sdp.origin.session_version + 1
        previous = self.web_params
        self.webrtc_local_sdp = answer
        self.web_params = params
        if self.relay is not None and previous is not None and _same_codecs(previous, params):
            self.relay.web = params
            self.relay.apply_directions()
        elif self.trunk_params is not None:
            self._complete()
        return str(answer)

    # Relay -----------------------------------------------------------------------------------------
    def _complete(self) -> None:
        assert self.web_params is not None and self.trunk_params is not None and self.trunk is not None
        transcoders: tuple[Transcoding | None, Transcoding | None] = (None, None)
        web_codec, trunk_codec = self.web_params.codec, self.trunk_params.codec
        if web_codec.name.lower() != trunk_codec.name.lower():
            from media.transcoder import new_transcoder

            c = self.config
            transcoders = (
                new_transcoder(
                    web_codec.name, trunk_codec.name, bitrate=c.opus_bitrate, complexity=c.opus_complexity
                ),
                new_transcoder(
                    trunk_codec.name, web_codec.name, bitrate=c.opus_bitrate, complexity=c.opus_complexity
                ),
            )
        if self.relay is not None:
            self.relay.detach()
        relay = CallRelay(
            self.web_params,
            self.trunk_params,
            self.web.send_rtp,
            self.trunk.send_rtp,
            self._digit,
            transcoders,
            web_ssrc=self.web_ssrc,
            trunk_ssrc=self.trunk_ssrc,
        )
        self.relay = relay
        self.web.on_rtp = relay.to_trunk.forward
        self.web.on_rtcp = relay.rtcp_from_web
        self.trunk.on_rtp = relay.to_web.forward
        self.trunk.on_rtcp = relay.rtcp_from_trunk
        log.info(
            "call %s media: webrtc %s/%d ⇄ trunk %s/%d (%s)",
            self.call_id,
            web_codec.name,
            web_codec.clock_rate,
            trunk_codec.name,
            trunk_codec.clock_rate,
            "passthrough" if relay.passthrough else "transcoding",
        )
        self._route_in_c()

    def _digit(self, leg: str, digit: str) -> None:
        # ``relayed``: the other leg negotiated telephone-event, so the digit went on in RTP. When it did
        # not (trunks without RFC 4733), the signalling side sends it another way (SIP INFO).
        relay = self.relay
        path = None if relay is None else relay.to_trunk if leg == "webrtc" else relay.to_web
        relayed = path is not None and path.out_event_pt >= 0
        self.on_event("digit", {"leg": leg, "digit": digit, "relayed": relayed})

    def _web_closed(self, reason: str) -> None:
        if not self.closed and self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close(f"webrtc: {reason}"))

    def _start_rtcp(self) -> None:
        self._rtcp_task = asyncio.ensure_future(self._rtcp_loop())

    async def _rtcp_loop(self) -> None:
        """RFC 3550 §6.2: reports at a randomised interval (0.5 to 1.5 times the configured one)."""
        while not self.closed:
            await asyncio.sleep(self.config.rtcp_interval * (0.5 + random.random()))
            relay = self.relay
            if relay is None:
                continue
            to_web, to_trunk = relay.rtcp_reports(time.monotonic())
            # The browser's receiver reports say how much of our Opus it loses: FEC follows (RFC 7587 §3.1).
            adapt = getattr(relay.to_web.transcoder, "adapt_to_loss", None)
            if adapt is not None:
                adapt(relay.web_rtcp.stats.remote_fraction_lost)
            self.web.send_rtcp(to_web)
            if self.trunk is not None:
                self.trunk.send_rtcp(to_trunk)

    # Control ---------------------------------------------------------------------------------------
    async def send_dtmf(
        self, digits: str, leg: str = "trunk", duration_ms: int = 160, gap_ms: int = 60
    ) -> None:
        """Send digits as RFC 4733 events towards ``leg`` ("trunk" or "webrtc"), replacing audio meanwhile."""
        if self.relay is None:
            raise RuntimeError("call media is not connected yet")
        async with self._inject_lock:
            for digit in digits:
                path, packets = self.relay.dtmf_packets(leg, digit, duration_ms)
                event_ts: int | None = None
                with _audio_held_back(path):
                    async for marker, payload in _paced(packets):
                        event_ts = path.inject(path.out_event_pt, payload, marker, time.monotonic(), event_ts)
                await asyncio.sleep(gap_ms / 1000)

    async def play_tone(self, leg: str = "webrtc", cadence: Cadence = WARNING) -> None:
        """Play ``cadence`` towards ``leg`` in that leg's codec, in place of the relayed audio meanwhile
        (the credit warning, :mod:`media.tones`)."""
        if self.relay is None:
            raise RuntimeError("call media is not connected yet")
        path = self.relay.to_web if leg == "webrtc" else self.relay.to_trunk
        frames = tone_frames(path.out_codec, path.out_rate, cadence)
        schedule = [(i * 0.02, i == 0, payload) for i, payload in enumerate(frames)]
        async with self._inject_lock:
            with _audio_held_back(path):
                async for marker, payload in _paced(schedule):
                    path.inject(path.out_audio_pt, payload, marker, time.monotonic())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "call_id": self.call_id,
            "passthrough": self.relay.passthrough if self.relay else None,
            # Which relay carries the audio: the C pump or the Python path (media/fastpath.py).
            "relay": "c" if self.relay is not None and self.relay.in_c else "python",
            "webrtc_state": self.web.state.value,
            "counters": {"webrtc": self.web.counter_totals()},
            "dropped_before_ready": self.dropped_before_ready,
        }
        if self.trunk is not None:
            result["counters"]["trunk"] = self.trunk.counter_totals()
        if self.relay is not None:
            result["rtcp"] = {leg: vars(s).copy() for leg, s in self.relay.stats().items()}
        return result

    async def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rtcp_task
        if self.trunk is not None:
            self.trunk.close()
        await self.web.close()
        self.on_event("closed", {"reason": reason})


@contextlib.contextmanager
def _audio_held_back(path: MediaPath) -> Iterator[None]:
    """While packets we originate go out on ``path``, its relayed audio is held back; after, the stream
    continues with a new talkspurt (``rewriter.restart``: sequence + 1, timestamp by wall time)."""
    path.injecting = True
    try:
        yield
    finally:
        path.injecting = False
        path.rewriter.restart()


async def _paced(schedule: Iterable[tuple[float, bool, bytes]]) -> AsyncIterator[tuple[bool, bytes]]:
    """Each ``(marker, payload)`` of ``schedule`` at its offset in seconds from now."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for offset, marker, payload in schedule:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield marker, payload
