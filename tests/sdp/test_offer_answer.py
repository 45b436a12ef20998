"""RFC 3264 offer/answer with codec intersection."""

import pytest

from sdp import (
    CN,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    NegotiationError,
    SessionDescription,
    answer_offer,
    build_offer,
    process_answer,
)
from tests.sdp.offers import CHROME_OFFER, SIPP_G711_OFFER

PASSTHROUGH_FIRST = [PCMU, PCMA, OPUS, TELEPHONE_EVENT(8000, 101), TELEPHONE_EVENT(48000, 110), CN]


def test_chrome_offer_answered_with_pcmu_and_its_8000_telephone_event() -> None:
    offer = SessionDescription.parse(CHROME_OFFER)
    answer, params = answer_offer(offer, address="127.0.0.1", port=40000, codecs=PASSTHROUGH_FIRST)
    assert params.codec.name == "PCMU"
    assert params.codec.payload_type == 0
    assert params.telephone_event is not None
    assert (params.telephone_event.payload_type, params.telephone_event.clock_rate) == (126, 8000)
    assert params.comfort_noise is not None and params.comfort_noise.payload_type == 13
    assert params.rtcp_mux
    assert params.mid == "0"
    (audio,) = answer.media
    assert audio.formats == ["0", "126", "13"]
    assert audio.rtcp_mux
    assert answer.get("group") == "BUNDLE 0"
    assert audio.direction == "sendrecv"
    # The answer is itself valid SDP.
    assert str(SessionDescription.parse(str(answer))) == str(answer)


def test_chrome_offer_answered_with_opus_when_opus_is_preferred() -> None:
    offer = SessionDescription.parse(CHROME_OFFER)
    _, params = answer_offer(
        offer, address="127.0.0.1", port=40000, codecs=[OPUS, PCMU, *PASSTHROUGH_FIRST[3:]]
    )
    assert (params.codec.name, params.codec.payload_type, params.codec.clock_rate) == ("opus", 111, 48000)
    assert params.codec.fmtp == "minptime=10;useinbandfec=1"
    assert [(t.payload_type, t.clock_rate) for t in params.telephone_events] == [(110, 48000)]
    assert params.comfort_noise is None  # CN/8000 does not go with a 48 kHz codec


def test_sipp_offer_answer_reuses_offered_payload_types() -> None:
    offer = SessionDescription.parse(SIPP_G711_OFFER)
    answer, params = answer_offer(
        offer, address="127.0.0.1", port=30000, codecs=[PCMA, PCMU, *PASSTHROUGH_FIRST[3:]]
    )
    assert params.codec.name == "PCMA"
    assert params.telephone_event is not None and params.telephone_event.payload_type == 101
    assert params.telephone_event.fmtp == "0-15"
    assert (params.remote_host, params.remote_port, params.remote_rtcp_port) == ("127.0.0.1", 6000, 6001)
    assert not params.rtcp_mux
    assert params.ptime == 20
    assert answer.media[0].formats == ["8", "101"]
    assert answer.connection is not None and answer.connection.address == "127.0.0.1"


@pytest.mark.parametrize(
    ("offered", "wanted", "ours"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendonly", "sendonly", "inactive"),
    ],
)
def test_answer_direction_follows_rfc3264_table(offered: str, wanted: str, ours: str) -> None:
    offer = SessionDescription.parse(SIPP_G711_OFFER + f"a={offered}\r\n")
    answer, params = answer_offer(offer, address="127.0.0.1", port=1, codecs=[PCMU], direction=wanted)
    assert params.direction == ours
    assert answer.media[0].direction == ours


def test_offer_without_common_codec_is_rejected() -> None:
    offer = SessionDescription.parse(SIPP_G711_OFFER)
    with pytest.raises(NegotiationError):
        answer_offer(offer, address="127.0.0.1", port=1, codecs=[OPUS])


def test_video_stream_is_rejected_with_port_zero_keeping_position() -> None:
    text = SIPP_G711_OFFER.replace("m=audio", "m=video 7000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\nm=audio")
    answer, params = answer_offer(SessionDescription.parse(text), address="127.0.0.1", port=5, codecs=[PCMU])
    assert [(m.media, m.port) for m in answer.media] == [("video", 0), ("audio", 5)]
    assert params.codec.name == "PCMU"


def test_our_offer_and_a_peer_answer_give_remote_payload_types() -> None:
    offer = build_offer(address="127.0.0.1", port=20000, codecs=[PCMU, PCMA, TELEPHONE_EVENT(8000, 101)])
    assert offer.media[0].formats == ["0", "8", "101"]
    answer = SessionDescription.parse(
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 7078 RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
        "a=fmtp:96 0-16\r\na=recvonly\r\n"
    )
    params = process_answer(offer, answer)
    assert (params.codec.name, params.codec.payload_type, params.codec.local_payload_type) == ("PCMA", 8, 8)
    assert params.telephone_event is not None
    assert (params.telephone_event.payload_type, params.telephone_event.local_payload_type) == (96, 101)
    assert params.direction == "sendonly"
    assert (params.remote_host, params.remote_port) == ("127.0.0.1", 7078)


def test_answer_rejecting_audio_raises() -> None:
    offer = build_offer(address="127.0.0.1", port=20000, codecs=[PCMU])
    answer = SessionDescription.parse(
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    with pytest.raises(NegotiationError):
        process_answer(offer, answer)


def test_rtcp_attribute_gives_rtcp_port() -> None:
    offer = SessionDescription.parse(SIPP_G711_OFFER + "a=rtcp:6100\r\n")
    _, params = answer_offer(offer, address="127.0.0.1", port=1, codecs=[PCMU])
    assert params.remote_rtcp_port == 6100


def test_opus_is_answered_with_our_own_parameters_not_the_browsers() -> None:
    # RFC 7587 §7.1: each side declares its own Opus receive/send properties.
    ours = Codec("opus", 48000, 111, channels=2, fmtp="useinbandfec=1;maxplaybackrate=8000")
    offer = SessionDescription.parse(CHROME_OFFER.replace("minptime=10;useinbandfec=1", "stereo=1;usedtx=1"))
    answer, params = answer_offer(offer, address="127.0.0.1", port=40000, codecs=[ours, PCMU])
    assert params.codec.name == "opus"
    assert answer.media[0].fmtp(111) == "useinbandfec=1;maxplaybackrate=8000"
