"""Nothing from the wire raises: random datagrams into both legs and through the relay (hypothesis)."""

from __future__ import annotations

import os
import struct

import pylibsrtp
from hypothesis import given, settings
from hypothesis import strategies as st

from media.relay import CallRelay
from media.rtp import build_rtp
from media.transcoder import Transcoder, new_transcoder
from media.trunk import TrunkLeg
from media.webrtc import WebRtcLeg
from sdp import MediaParameters, NegotiatedCodec


def params(codec: str, rate: int, pt: int, te_pt: int) -> MediaParameters:
    return MediaParameters(
        codec=NegotiatedCodec(codec, rate, pt, pt),
        telephone_events=[NegotiatedCodec("telephone-event", rate, te_pt, te_pt)],
    )


def srtp(key: bytes, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy)


#: Passthrough, the Python transcoder, and the C one (media/_transcode.c) called through the Python relay.
MODES = ["passthrough", "transcode", "transcode-c"]


def make_transcoders(mode: str) -> tuple[object, object]:
    if mode == "passthrough":
        return (None, None)
    make = Transcoder if mode == "transcode" else new_transcoder
    return (make("opus", "PCMU"), make("PCMU", "opus"))


# Datagrams that look like RTP often enough to reach the relay: valid headers with random fields and
# payloads, plus arbitrary bytes.
rtp_like = st.builds(
    lambda pt, seq, ts, ssrc, marker, payload: bytes(build_rtp(pt, seq, ts, ssrc, payload, marker)),
    st.sampled_from([0, 8, 13, 101, 111, 126, 96, 127]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([1, 2, 0xFFFFFFFF]),
    st.booleans(),
    st.binary(max_size=200),
)
datagrams = st.lists(st.one_of(rtp_like, st.binary(max_size=300)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(datagrams, st.sampled_from(MODES))
def test_trunk_datagrams_never_raise(packets: list[bytes], mode: str) -> None:
    sent: list[bytes] = []
    web = params("opus", 48000, 111, 110) if mode != "passthrough" else params("PCMU", 8000, 0, 126)
    transcoders = make_transcoders(mode)
    relay = CallRelay(web, params("PCMU", 8000, 0, 101), sent.append, sent.append, None, transcoders)
    leg = TrunkLeg(relay.from_trunk, relay.rtcp_from_trunk, max_packets_per_second=1e9)
    for i, data in enumerate(packets):
        leg.datagram_received(data, ("127.0.0.1", 4000 + i % 2))
    counters = leg.counters
    assert (
        counters.rtp_received + counters.malformed + counters.foreign_source + counters.rtcp_received
        <= len(packets)
    )


@settings(max_examples=60, deadline=None)
@given(datagrams)
def test_webrtc_datagrams_never_raise_and_forgeries_are_counted(packets: list[bytes]) -> None:
    sent: list[bytes] = []
    relay = CallRelay(params("PCMU", 8000, 0, 126), params("PCMU", 8000, 0, 101), sent.append, sent.append)
    leg = WebRtcLeg(relay.from_web, relay.rtcp_from_web)
    leg.use_srtp(srtp(os.urandom(30), inbound=True), None)
    leg._original_data_received = lambda data, component: None
    for data in packets:
        leg._datagram(data, 1)
    media = [d for d in packets if d and 127 < d[0] < 192]
    # No key: every SRTP-looking datagram fails authentication (or is too short to be SRTP at all).
    assert leg.counters.rtp_received == 0
    assert leg.counters.unauthenticated + leg.counters.flood_dropped == len(media)
    assert sent == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.binary(min_size=0, max_size=120)), max_size=30),
    st.sampled_from(MODES),
)
def test_authentic_but_odd_packets_from_the_browser_never_raise(
    items: list[tuple[int, bytes]], mode: str
) -> None:
    """Authenticated SRTP carrying odd content (short events, unknown types, garbage Opus) is dropped or
    relayed, never raised."""
    key = os.urandom(30)
    sender = srtp(key, inbound=False)
    sent: list[bytes] = []
    web = params("opus", 48000, 111, 110) if mode != "passthrough" else params("PCMU", 8000, 0, 126)
    transcoders = make_transcoders(mode)
    relay = CallRelay(web, params("PCMU", 8000, 0, 101), sent.append, sent.append, None, transcoders)
    leg = WebRtcLeg(relay.from_web, relay.rtcp_from_web)
    leg.use_srtp(srtp(key, inbound=True), None)
    leg._original_data_received = lambda data, component: None
    types = (111, 110, 13, 96) if mode != "passthrough" else (0, 126, 13, 96)
    for i, (ts, payload) in enumerate(items):
        pt = types[i % 4]
        leg._datagram(sender.protect(bytes(build_rtp(pt, 100 + i, ts, 7, payload))), 1)
    assert leg.counters.unauthenticated == 0
    assert leg.counters.rtp_received == len(items)
    for packet in sent:
        assert struct.unpack_from("!B", packet, 1)[0] & 0x7F in (0, 101)
