"""SDP (RFC 4566) and offer/answer (RFC 3264), shared by sip/ (which carries it) and media/ (which negotiates it)."""

from sdp.message import Connection, MediaDescription, Origin, RtpMap, SdpParseError, SessionDescription
from sdp.offer_answer import (
    CN,
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    MediaParameters,
    NegotiatedCodec,
    NegotiationError,
    answer_offer,
    build_offer,
    process_answer,
)

__all__ = [
    "CN",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Codec",
    "Connection",
    "MediaDescription",
    "MediaParameters",
    "NegotiatedCodec",
    "NegotiationError",
    "Origin",
    "RtpMap",
    "SdpParseError",
    "SessionDescription",
    "answer_offer",
    "build_offer",
    "process_answer",
]
