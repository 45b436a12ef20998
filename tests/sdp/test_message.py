"""RFC 4566 parsing and serialising."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdp import RtpMap, SdpParseError, SessionDescription
from tests.sdp.offers import CHROME_OFFER, SIPP_G711_OFFER


def test_chrome_offer_round_trips_byte_for_byte() -> None:
    assert str(SessionDescription.parse(CHROME_OFFER)) == CHROME_OFFER


def test_sipp_offer_round_trips_byte_for_byte() -> None:
    assert str(SessionDescription.parse(SIPP_G711_OFFER)) == SIPP_G711_OFFER


def test_chrome_offer_fields_are_read() -> None:
    sdp = SessionDescription.parse(CHROME_OFFER)
    assert sdp.origin.session_id == "4611731400430051336"
    assert sdp.origin.session_version == 2
    assert sdp.get("group") == "BUNDLE 0"
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 9, "UDP/TLS/RTP/SAVPF")
    assert audio.formats == ["111", "63", "9", "0", "8", "13", "110", "126"]
    maps = audio.rtpmaps()
    assert maps[111] == RtpMap(111, "opus", 48000, 2)
    assert maps[110] == RtpMap(110, "telephone-event", 48000)
    assert maps[126] == RtpMap(126, "telephone-event", 8000)
    assert audio.fmtp(111) == "minptime=10;useinbandfec=1"
    assert audio.rtcp_mux
    assert audio.direction == "sendrecv"
    assert audio.get("ice-ufrag") == "Hk3q"
    assert audio.get("mid") == "0"
    assert len(audio.get_all("extmap")) == 4
    assert sdp.connection_for(audio) is not None
    assert sdp.connection_for(audio).host == "0.0.0.0"  # type: ignore[union-attr]


def test_static_payload_types_need_no_rtpmap() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 9\r\n"
    maps = SessionDescription.parse(text).media[0].rtpmaps()
    assert [m.encoding for m in maps.values()] == ["PCMU", "PCMA", "G722"]


def test_bare_lf_line_endings_are_accepted_and_written_as_crlf() -> None:
    text = SIPP_G711_OFFER.replace("\r\n", "\n")
    assert str(SessionDescription.parse(text)) == SIPP_G711_OFFER


def test_unknown_attributes_are_preserved_in_order() -> None:
    text = SIPP_G711_OFFER + "a=x-vendor-thing:42 foo\r\na=flag-only\r\n"
    media = SessionDescription.parse(text).media[0]
    assert media.attributes[-2:] == [("x-vendor-thing", "42 foo"), ("flag-only", None)]


def test_direction_setter_replaces_existing_direction() -> None:
    sdp = SessionDescription.parse(CHROME_OFFER)
    audio = sdp.media[0]
    audio.direction = "sendonly"
    assert audio.direction == "sendonly"
    assert audio.get_all("sendrecv") == []
    assert sdp.direction_for(audio) == "sendonly"


def test_session_level_direction_applies_when_media_has_none() -> None:
    text = SIPP_G711_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n")
    sdp = SessionDescription.parse(text)
    assert sdp.direction_for(sdp.media[0]) == "recvonly"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 x IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n",
    ],
)
def test_malformed_descriptions_raise_sdp_parse_error(text: str) -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(text)


def test_oversized_description_is_refused() -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(SIPP_G711_OFFER + "a=x:" + "y" * 70000 + "\r\n")


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(b"v=0\r\n\xff\xfe")


@given(st.binary(max_size=400))
def test_no_input_raises_anything_but_sdp_parse_error(data: bytes) -> None:
    try:
        SessionDescription.parse(data)
    except SdpParseError:
        pass


@given(st.lists(st.sampled_from([*SIPP_G711_OFFER.split("\r\n")[:-1], "a=rtpmap:x", "m=audio 1 RTP/AVP"])))
def test_shuffled_lines_parse_or_raise_sdp_parse_error(lines: list[str]) -> None:
    try:
        sdp = SessionDescription.parse("\r\n".join(lines))
        for media in sdp.media:
            media.rtpmaps()
            _ = media.ptime
    except SdpParseError:
        pass
