"""The credit-warning tone: built in each leg's codec, and played into a live call in place of its audio."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from media import g711
from media.opus import OpusDecoder
from media.tones import WARNING, tone_frames
from tests.media.peers import dominant_frequency, rms_dbfs, tone
from tests.media.test_passthrough import connect_outbound


@pytest.mark.parametrize(("codec", "decode"), [("PCMU", g711.ulaw_decode), ("PCMA", g711.alaw_decode)])
def test_g711_frames_beep_three_times_at_440_hz(codec: str, decode: object) -> None:
    frames = tone_frames(codec, 8000)
    assert len(frames) == 60 and {len(f) for f in frames} == {
        160
    }  # 3 beeps of (200 + 200) ms in 20 ms frames
    assert callable(decode)
    audio = np.concatenate([decode(f) for f in frames]).astype(np.float64)
    beeps = [audio[i * 3200 : i * 3200 + 1600] for i in range(3)]
    gaps = [audio[i * 3200 + 1600 : (i + 1) * 3200] for i in range(3)]
    for beep in beeps:
        assert abs(dominant_frequency(beep, 8000) - WARNING.frequency) < 10
        assert abs(rms_dbfs(beep) - (WARNING.level_dbfs - 3)) < 1.5  # a sine's RMS is 3 dB under its peak
    for gap in gaps:
        assert np.max(np.abs(gap)) <= 8  # G.711's quietest codes, i.e. silence


def test_opus_frames_decode_to_the_same_beeps() -> None:
    frames = tone_frames("opus", 48000)
    decoder = OpusDecoder()
    audio = np.concatenate([decoder.decode(f) for f in frames]).astype(np.float64)
    assert len(audio) == 60 * 960
    lookahead = 312  # the encoder's delay; skip it so the windows line up with the beeps
    beep = audio[lookahead + 2000 : lookahead + 9000]
    gap = audio[lookahead + 11000 : lookahead + 18000]
    assert abs(dominant_frequency(beep, 48000) - WARNING.frequency) < 10
    assert rms_dbfs(gap) < rms_dbfs(beep) - 40


async def test_the_warning_reaches_the_trunk_in_place_of_the_browsers_audio(
    browser: RTCPeerConnection,
) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 6.0))
    try:
        await peer.wait_for(50)  # the browser's 1000 Hz tone is flowing to the trunk
        before = len(peer.received)
        await call.play_tone("trunk")
        during = peer.received[before:]
        await peer.wait_for(len(peer.received) + 25)
        after = peer.received[before + len(during) :]
    finally:
        await call.close()
        peer.close()
    audio = np.concatenate([g711.ulaw_decode(data[12:]) for _, data, _ in during[:10]]).astype(np.float64)
    assert abs(dominant_frequency(audio, 8000) - WARNING.frequency) < 15, "the beep, not the browser's tone"
    sequence = [h.sequence_number for h, _, _ in peer.received]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequence)), "one stream"
    assert during[0][0].marker, "the tone starts a talkspurt (RFC 3551 §4.1)"
    later = np.concatenate([g711.ulaw_decode(data[12:]) for _, data, _ in after[-10:]]).astype(np.float64)
    assert abs(dominant_frequency(later, 8000) - 1000) < 15, "the browser's audio is relayed again"


async def test_the_warning_reaches_the_browser(browser: RTCPeerConnection) -> None:
    call, peer = await connect_outbound(browser, tone(1000, 4.0))
    try:
        track = browser.getReceivers()[0].track
        playing = asyncio.ensure_future(call.play_tone("webrtc"))
        chunks, rate = [], 0
        while len(chunks) < 100:  # the trunk sends nothing: the tone is all the browser gets
            try:
                frame = await asyncio.wait_for(track.recv(), 1.0 if playing.done() else 5.0)
            except TimeoutError:
                break
            chunks.append(frame.to_ndarray().reshape(-1)[:: len(frame.layout.channels)])
            rate = frame.sample_rate
        await playing
    finally:
        await call.close()
        peer.close()
    audio = np.concatenate(chunks).astype(np.float64)
    loud = [audio[i : i + rate // 10] for i in range(0, len(audio) - rate // 10, rate // 10)]
    heard = [dominant_frequency(w, rate) for w in loud if rms_dbfs(w) > -40]
    assert heard and all(abs(f - WARNING.frequency) < 15 for f in heard), heard
