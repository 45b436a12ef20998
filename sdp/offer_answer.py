"""The offer/answer model for audio sessions (RFC 3264) with codec intersection.

One audio stream per session is what a phone call uses; other ``m=`` sections (video, data channels) in an
offer are rejected in the answer with port 0, keeping their position (RFC 3264 §6). The result of
negotiating, from the local side's point of view, is a :class:`MediaParameters`: what to send where, with
which payload types, and what to expect back. ``sip/`` carries the SDP text; ``media/`` uses these objects.

Payload types: an answer reuses the offer's numbers (§6.1 SHOULD), so both directions normally agree; when
they do not, :class:`NegotiatedCodec` keeps the remote number (for what we send) and ours (for what we
receive) apart.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sdp.message import Connection, MediaDescription, Origin, RtpMap, SessionDescription

__all__ = [
    "CN",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Codec",
    "MediaParameters",
    "NegotiatedCodec",
    "NegotiationError",
    "answer_offer",
    "build_offer",
    "process_answer",
]


class NegotiationError(ValueError):
    """No acceptable audio stream could be agreed (RFC 3264 §6: the answerer rejects; SIP answers 488)."""


@dataclass(frozen=True)
class Codec:
    """A codec we can offer or accept. ``payload_type`` is the number we use when we make the offer."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        return rtpmap.encoding.lower() == self.name.lower() and rtpmap.clock_rate == self.clock_rate

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"

    @property
    def is_comfort_noise(self) -> bool:
        return self.name.upper() == "CN"


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
#: G.722's RTP clock is 8000 although it samples at 16 kHz (RFC 3551 §4.5.2).
G722 = Codec("G722", 8000, 9)
OPUS = Codec("opus", 48000, 111, channels=2, fmtp="minptime=10;useinbandfec=1")
CN = Codec("CN", 8000, 13)


def TELEPHONE_EVENT(clock_rate: int = 8000, payload_type: int = 101) -> Codec:
    """RFC 4733 events at a clock rate; its rate must equal the audio codec's it goes with (§2.1)."""
    return Codec("telephone-event", clock_rate, payload_type, fmtp="0-16")


@dataclass(frozen=True)
class NegotiatedCodec:
    """A codec both sides agreed on."""

    name: str
    clock_rate: int
    #: Number the remote side expects from us (its description's).
    payload_type: int
    #: Number we expect from the remote side (our description's).
    local_payload_type: int
    channels: int | None = None
    fmtp: str | None = None


@dataclass
class MediaParameters:
    """The outcome of offer/answer for the audio stream, from the local side's view."""

    codec: NegotiatedCodec
    #: Other audio codecs agreed (in preference order), should the peer switch.
    alternatives: list[NegotiatedCodec] = field(default_factory=list)
    telephone_events: list[NegotiatedCodec] = field(default_factory=list)
    comfort_noise: NegotiatedCodec | None = None
    remote_host: str = "0.0.0.0"
    remote_port: int = 0
    remote_rtcp_port: int = 0
    rtcp_mux: bool = False
    #: What we do: sendrecv, sendonly (we send, peer holds us), recvonly or inactive.
    direction: str = "sendrecv"
    ptime: int | None = None
    mid: str | None = None

    @property
    def telephone_event(self) -> NegotiatedCodec | None:
        """telephone-event at the main codec's clock rate (RFC 4733 §2.1), else any agreed one."""
        for te in self.telephone_events:
            if te.clock_rate == self.codec.clock_rate:
                return te
        return self.telephone_events[0] if self.telephone_events else None

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _combine_direction(remote_view: str, local: str) -> str:
    """Our direction given the remote's (reversed) and our wish (RFC 3264 §6.1 table)."""
    theirs = _REVERSE[remote_view]
    send = theirs in ("sendrecv", "sendonly") and local in ("sendrecv", "sendonly")
    recv = theirs in ("sendrecv", "recvonly") and local in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive"
    )


def _add_codec_lines(media: MediaDescription, pt: int, codec: Codec | NegotiatedCodec) -> None:
    media.formats.append(str(pt))
    media.add("rtpmap", str(RtpMap(pt, codec.name, codec.clock_rate, codec.channels)))
    if codec.fmtp:
        media.add("fmtp", f"{pt} {codec.fmtp}")


def _remote_rtcp_port(media: MediaDescription, rtcp_mux: bool) -> int:
    if rtcp_mux:
        return media.port
    value = media.get("rtcp")
    if value:
        try:
            return int(value.split()[0])
        except ValueError:
            pass
    return media.port + 1 if media.port else 0


def _new_session(address: str, session_id: str | None) -> SessionDescription:
    addrtype = "IP6" if ":" in address else "IP4"
    sid = session_id or str(secrets.randbits(62))
    return SessionDescription(
        origin=Origin("-", sid, 1, "IN", addrtype, address),
        session_name="-",
        connection=Connection(address, "IN", addrtype),
    )


def build_offer(
    *,
    address: str,
    port: int,
    codecs: Sequence[Codec],
    direction: str = "sendrecv",
    ptime: int | None = 20,
    rtcp_mux: bool = False,
    proto: str = "RTP/AVP",
    session_id: str | None = None,
    media_attributes: Iterable[tuple[str, str | None]] = (),
    session_attributes: Iterable[tuple[str, str | None]] = (),
) -> SessionDescription:
    """An offer with one audio stream listing ``codecs`` in preference order (RFC 3264 §5)."""
    session = _new_session(address, session_id)
    session.attributes.extend(session_attributes)
    media = MediaDescription(media="audio", port=port, proto=proto)
    for codec in codecs:
        _add_codec_lines(media, codec.payload_type, codec)
    if ptime:
        media.add("ptime", str(ptime))
    if rtcp_mux:
        media.add("rtcp-mux")
    media.attributes.extend(media_attributes)
    media.add(direction)
    session.media.append(media)
    return session


def _select(
    offer_media: MediaDescription, supported: Sequence[Codec]
) -> tuple[list[NegotiatedCodec], list[NegotiatedCodec], NegotiatedCodec | None]:
    """Intersect an offered stream with ``supported`` (our preference order wins, RFC 3264 §6.1)."""
    rtpmaps = offer_media.rtpmaps()
    agreed: list[NegotiatedCodec] = []
    for codec in supported:
        for pt, rtpmap in rtpmaps.items():
            if not codec.matches(rtpmap):
                continue
            agreed.append(
                NegotiatedCodec(
                    rtpmap.encoding,
                    codec.clock_rate,
                    pt,
                    pt,
                    rtpmap.channels,
                    offer_media.fmtp(pt) if codec.fmtp is None else _merge_fmtp(offer_media.fmtp(pt), codec),
                )
            )
            break
    return _classify(agreed)


def _classify(
    agreed: Iterable[NegotiatedCodec],
) -> tuple[list[NegotiatedCodec], list[NegotiatedCodec], NegotiatedCodec | None]:
    """Agreed codecs in order → (audio codecs, telephone-event codecs (RFC 4733), the first CN (RFC 3389))."""
    audio: list[NegotiatedCodec] = []
    events: list[NegotiatedCodec] = []
    cn: NegotiatedCodec | None = None
    for codec in agreed:
        name = codec.name.lower()
        if name == "telephone-event":
            events.append(codec)
        elif name == "cn":
            cn = cn or codec
        else:
            audio.append(codec)
    return audio, events, cn


def _merge_fmtp(offered: str | None, codec: Codec) -> str | None:
    """Answer with the offer's fmtp for events (it lists what the offerer can receive, RFC 4733 §7.1.1);
    with our own for Opus, whose parameters each side declares for itself (what it receives and sends,
    RFC 7587 §7.1: ``maxplaybackrate``, ``useinbandfec``, ``stereo``…), so echoing the offer's would
    describe the browser instead of us."""
    if codec.is_telephone_event:
        return offered or codec.fmtp
    if codec.name.lower() == "opus":
        return codec.fmtp
    return codec.fmtp if offered is None else offered


def answer_offer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    codecs: Sequence[Codec],
    direction: str = "sendrecv",
    single_codec: bool = True,
    rtcp_mux: bool = True,
    ptime: int | None = None,
    session_id: str | None = None,
    media_attributes: Iterable[tuple[str, str | None]] = (),
    session_attributes: Iterable[tuple[str, str | None]] = (),
) -> tuple[SessionDescription, MediaParameters]:
    """Answer ``offer`` (RFC 3264 §6): accept the first audio stream with a codec in ``codecs``.

    ``codecs`` is our preference order and also names the telephone-event and CN entries we accept; events
    are kept only at the clock rate of an agreed audio codec (RFC 4733 §2.1). With ``single_codec`` the
    answer lists one audio codec, so the peer cannot switch mid-call (what a relay wants for passthrough).
    Raises :class:`NegotiationError` if no stream can be accepted.
    """
    answer = _new_session(address, session_id)
    answer.attributes.extend(session_attributes)
    params: MediaParameters | None = None
    accepted_mids: list[str] = []
    for offered in offer.media:
        media = MediaDescription(media=offered.media, port=0, proto=offered.proto)
        mid = offered.get("mid")
        if params is None and offered.media == "audio" and offered.port != 0 and offered.is_rtp:
            audio, events, cn = _select(offered, codecs)
            if audio:
                chosen = audio[:1] if single_codec else audio
                rates = {c.clock_rate for c in chosen}
                events = [e for e in events if e.clock_rate in rates]
                cn = cn if cn is not None and cn.clock_rate in rates else None
                media.port = port
                for agreed in [*chosen, *events, *([cn] if cn else [])]:
                    _add_codec_lines(media, agreed.payload_type, agreed)
                mux = rtcp_mux and offered.rtcp_mux
                if mid is not None:
                    media.add("mid", mid)
                    accepted_mids.append(mid)
                if ptime or offered.ptime:
                    media.add("ptime", str(ptime or offered.ptime))
                if mux:
                    media.add("rtcp-mux")
                media.attributes.extend(media_attributes)
                our_direction = _combine_direction(offer.direction_for(offered), direction)
                media.add(our_direction)
                conn = offer.connection_for(offered)
                params = MediaParameters(
                    codec=chosen[0],
                    alternatives=chosen[1:],
                    telephone_events=events,
                    comfort_noise=cn,
                    remote_host=conn.host if conn else "0.0.0.0",
                    remote_port=offered.port,
                    remote_rtcp_port=_remote_rtcp_port(offered, mux),
                    rtcp_mux=mux,
                    direction=our_direction,
                    ptime=offered.ptime,
                    mid=mid,
                )
                answer.media.append(media)
                continue
        # Rejected stream: port 0, at least one format from the offer (RFC 3264 §6).
        media.formats = offered.formats[:1] or ["0"]
        if mid is not None:
            media.add("mid", mid)
        answer.media.append(media)
    if params is None:
        raise NegotiationError("no audio stream with a common codec")
    group = offer.get("group")
    if group is not None and group.startswith("BUNDLE") and accepted_mids:
        answer.attributes.insert(0, ("group", "BUNDLE " + " ".join(accepted_mids)))
    return answer, params


def process_answer(offer: SessionDescription, answer: SessionDescription) -> MediaParameters:
    """Read the answer to our ``offer`` (RFC 3264 §7): the first audio stream it accepted."""
    if len(answer.media) != len(offer.media):
        raise NegotiationError("answer has a different number of m= lines than the offer (RFC 3264 §6)")
    for ours, theirs in zip(offer.media, answer.media, strict=True):
        if ours.media != "audio" or ours.port == 0:
            continue
        if theirs.port == 0:
            continue
        our_maps = ours.rtpmaps()
        agreed: list[NegotiatedCodec] = []
        for pt, rtpmap in theirs.rtpmaps().items():
            local_pt = next(
                (
                    p
                    for p, m in our_maps.items()
                    if m.encoding.lower() == rtpmap.encoding.lower() and m.clock_rate == rtpmap.clock_rate
                ),
                None,
            )
            if local_pt is not None:
                agreed.append(
                    NegotiatedCodec(
                        rtpmap.encoding, rtpmap.clock_rate, pt, local_pt, rtpmap.channels, theirs.fmtp(pt)
                    )
                )
        audio, events, cn = _classify(agreed)
        if not audio:
            raise NegotiationError("answer accepted the audio stream with no codec we offered")
        mux = ours.rtcp_mux and theirs.rtcp_mux
        conn = answer.connection_for(theirs)
        ours_dir = offer.direction_for(ours)
        their_dir = answer.direction_for(theirs)
        return MediaParameters(
            codec=audio[0],
            alternatives=audio[1:],
            telephone_events=events,
            comfort_noise=cn,
            remote_host=conn.host if conn else "0.0.0.0",
            remote_port=theirs.port,
            remote_rtcp_port=_remote_rtcp_port(theirs, mux),
            rtcp_mux=mux,
            direction=_combine_direction(their_dir, ours_dir),
            ptime=theirs.ptime,
            mid=theirs.get("mid"),
        )
    raise NegotiationError("answer rejected every audio stream")
