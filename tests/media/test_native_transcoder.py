"""The C transcoder (media/_transcode.c) gives the very packets media/transcoder.py's Transcoder gives.

Both run the same libopus with the same settings, so for the same input stream — in order, with gaps to
conceal, late and duplicate packets, payloads the codecs refuse, frame sizes Opus has to join — every
output packet must be equal to the byte, and so must the counters. The Python class is the reference the
transcoding tests (PESQ, concealment) hold to what callers hear.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import fastpath, g711
from media.opus import OpusEncoder
from media.rtp import RTP_MIN_SIZE, RtpHeader, parse_rtp
from media.transcoder import Transcoder, new_transcoder
from tests.media.peers import tone

pytestmark = pytest.mark.skipif(
    fastpath.transcoder("opus", "pcmu", bitrate=24000, complexity=1) is None,
    reason="the C transcoder needs the extension and libopus through ctypes",
)

DIRECTIONS = [("opus", "pcmu"), ("pcmu", "opus"), ("pcma", "opus"), ("opus", "pcma"), ("pcmu", "pcma")]
SPEECH = tone(440, 2.0, rate=8000) // 2 + tone(1270, 2.0, rate=8000) // 3


def opus_payloads(rate: int, samples_per_frame: int) -> list[bytes]:
    """Real Opus at ``rate`` (what a browser sends is 48 kHz), ``samples_per_frame`` per packet."""
    encoder = OpusEncoder(24000, 1, rate)
    audio = np.repeat(SPEECH, rate // 8000)
    return [
        encoder.encode(audio[i : i + samples_per_frame])[0]
        for i in range(0, len(audio) - samples_per_frame, samples_per_frame)
    ]


OPUS_20MS = opus_payloads(48000, 960)
OPUS_60MS = opus_payloads(48000, 2880)
OPUS_10MS_8K = opus_payloads(8000, 80)


def g711_payload(codec: str, start: int, samples: int) -> bytes:
    frame = SPEECH[start % 8000 : start % 8000 + samples]
    return g711.ulaw_encode(frame) if codec == "pcmu" else g711.alaw_encode(frame)


@st.composite
def streams(draw: st.DrawFn, source: str) -> list[bytearray]:
    """A stream as the network delivers it: mostly in order, with losses, reordering, duplicates,
    garbage and odd packet layouts (CSRCs, an extension, padding)."""
    packets = []
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 0xFFFFFFFF))
    for index in range(draw(st.integers(1, 40))):
        step = draw(st.sampled_from([1] * 12 + [2, 3, 4, 6, 7, 0, -1, -3, 2000]))
        seq = (seq + step) & 0xFFFF
        ts = (ts + step * (960 if source == "opus" else 160)) & 0xFFFFFFFF
        kind = draw(st.sampled_from(["audio"] * 8 + ["garbage", "empty", "odd", "30ms", "60ms"]))
        if kind == "garbage":
            payload = draw(st.binary(min_size=1, max_size=60))
        elif kind == "empty":
            payload = b""
        elif source == "opus":
            pool = {"odd": OPUS_10MS_8K, "60ms": OPUS_60MS}.get(kind, OPUS_20MS)
            payload = pool[index % len(pool)]
        else:
            samples = {"odd": 100, "30ms": 240, "60ms": 480}.get(kind, 160)
            payload = g711_payload(source, index * 160, samples)
        csrcs = draw(st.integers(0, 2))
        extension = draw(st.booleans())
        padding = draw(st.integers(0, 3))
        first = 0x80 | (0x20 if padding else 0) | (0x10 if extension else 0) | csrcs
        packet = bytearray([first, draw(st.booleans()) << 7 | 111])
        packet += seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + (0x1234ABCD).to_bytes(4, "big")
        packet += bytes(4 * csrcs)
        if extension:
            packet += b"\xbe\xde\x00\x01\x10\xff\x00\x00"
        packet += payload
        if padding:
            packet += bytes(padding - 1) + bytes([padding])
        packets.append(packet)
    return packets


def run(transcoder: object, packets: list[bytearray]) -> list[bytes]:
    out = []
    for packet in packets:
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        out.extend(bytes(p) for p in transcoder.transcode(bytearray(packet), header, 0.0))  # type: ignore[attr-defined]
    return out


def counters(transcoder: object) -> tuple[int, int, int]:
    return (transcoder.concealed, transcoder.late_dropped, transcoder.codec_errors)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("source", "target"), DIRECTIONS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_c_transcoder_gives_the_python_transcoders_packets(
    source: str, target: str, data: st.DataObject
) -> None:
    packets = data.draw(streams(source))
    python = Transcoder(source, target)
    native = new_transcoder(source, target)
    assert isinstance(native, fastpath.NativeTranscoder)
    assert run(native, packets) == run(python, packets)
    assert counters(native) == counters(python)


def test_c_transcoder_counts_its_decodes_with_the_python_ones() -> None:
    native = new_transcoder("pcmu", "opus")
    before = g711.DECODE_CALLS.value
    for i in range(3):
        packet = bytearray(b"\x80\x00" + (i + 1).to_bytes(2, "big") + bytes(8) + g711_payload("pcmu", 0, 160))
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        assert len(native.transcode(packet, header, 0.0)) == 1
    assert g711.DECODE_CALLS.value == before + 3


def test_c_transcoder_follows_reported_loss_and_refuses_what_python_refuses() -> None:
    native = new_transcoder("pcmu", "opus")
    encoder = native.opus_encoder  # type: ignore[attr-defined]
    native.adapt_to_loss(0.10)  # type: ignore[attr-defined]
    assert encoder.expected_loss == 10
    native.adapt_to_loss(0.9)  # type: ignore[attr-defined]
    assert encoder.expected_loss == 25
    new_transcoder("opus", "pcmu").adapt_to_loss(0.5)  # type: ignore[attr-defined]  # nothing to adapt
    with pytest.raises(ValueError, match="cannot transcode"):
        new_transcoder("opus", "opus")
    with pytest.raises(ValueError, match="cannot transcode"):
        new_transcoder("g729", "opus")


def test_c_transcoder_counts_a_packet_that_is_not_rtp() -> None:
    native = new_transcoder("pcmu", "opus")
    header = RtpHeader(False, 0, 1, 0, 0, RTP_MIN_SIZE, RTP_MIN_SIZE)
    assert native.transcode(bytearray(b"\x80\x00\x00"), header, 0.0) == []
    assert native.codec_errors == 1  # type: ignore[attr-defined]


def test_bad_arguments_are_errors_not_crashes() -> None:
    """No libopus state, unknown codecs, bad function addresses, a packet that is not RTP."""
    _fastpath = pytest.importorskip("media._fastpath")
    with pytest.raises(ValueError):
        _fastpath.Transcoder("opus", "pcmu", None, None)
    with pytest.raises(ValueError):
        _fastpath.Transcoder("pcmu", "pcmu")
    with pytest.raises(TypeError):
        _fastpath.Transcoder("pcmu", 7)
    with pytest.raises(ValueError):
        _fastpath.use_libopus(
            decode=0, encode=1, repacketizer_create=1, repacketizer_init=1,
            repacketizer_cat=1, repacketizer_out=1, repacketizer_destroy=1,
        )  # fmt: skip
    assert _fastpath.Transcoder("pcmu", "pcma").transcode(b"\x80", None, 0.0) == []
