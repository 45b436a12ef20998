"""The transcoding path: resampler quality, Opus ⇄ G.711, concealment, PESQ on synthetic speech."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from scipy.io import wavfile
from scipy.signal import resample_poly

from media import g711
from media.call import MediaCall, MediaConfig
from media.resample import Decimator, Interpolator
from media.rtp import RtpHeader, build_rtp, parse_rtp
from media.transcoder import OpusDecoder, Transcoder
from tests.media.peers import RtpPeer, SignalTrack, dominant_frequency, rms_dbfs, tone, trunk_answer


def run_frames(process, signal: npt.NDArray[np.int16], frame: int) -> npt.NDArray[np.int16]:  # type: ignore[no-untyped-def]
    return np.concatenate([process(signal[i : i + frame]) for i in range(0, len(signal), frame)])


def test_decimator_passes_speech_band_and_removes_what_would_alias() -> None:
    passed = run_frames(Decimator().process, tone(1000, 1.0), 960)
    assert abs(rms_dbfs(passed[400:]) - rms_dbfs(tone(1000, 1.0))) < 0.3
    aliased = run_frames(Decimator().process, tone(6000, 1.0), 960)  # would fold to 2 kHz
    assert rms_dbfs(aliased[400:]) < rms_dbfs(tone(6000, 1.0)) - 60


def test_interpolator_keeps_level_and_suppresses_images() -> None:
    up = run_frames(Interpolator().process, tone(1000, 1.0, rate=8000), 160)
    assert abs(rms_dbfs(up[4800:]) - rms_dbfs(tone(1000, 1.0))) < 0.3
    spectrum = np.abs(np.fft.rfft(up[4800:] * np.hanning(len(up) - 4800)))
    freqs = np.fft.rfftfreq(len(up) - 4800, 1 / 48000)
    image = spectrum[(freqs > 6500) & (freqs < 7500)].max()  # 8 kHz - 1 kHz image
    assert 20 * np.log10(image / spectrum.max()) < -60


def test_resampler_state_makes_frames_join_seamlessly() -> None:
    signal = tone(440, 0.5)
    framed = run_frames(Decimator().process, signal, 960)
    whole = Decimator().process(signal)
    assert np.array_equal(framed, whole)


def encode_stream(payloads: list[bytes], pt: int, samples: int) -> list[tuple[bytearray, RtpHeader]]:
    out = []
    for i, payload in enumerate(payloads):
        packet = build_rtp(pt, 100 + i, 1000 + samples * i, 0x42, payload)
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        out.append((packet, header))
    return out


def opus_to_pcmu(signal48: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Browser side encodes Opus; our transcoder makes PCMU; the trunk decodes it."""
    from media.transcoder import OpusEncoder

    encoder = OpusEncoder(32000, complexity=10)  # as a browser encodes (Chrome: 32 kb/s, complexity 10)
    payloads = [p for i in range(0, len(signal48) - 959, 960) for p in encoder.encode(signal48[i : i + 960])]
    transcoder = Transcoder("opus", "PCMU")
    result = []
    for packet, header in encode_stream(payloads, 111, 960):
        for out in transcoder.transcode(packet, header, 0.0):
            assert out[1] & 0x7F == 111  # the rewriter maps the type afterwards
            result.append(g711._ULAW_DECODE[np.frombuffer(bytes(out[12:]), dtype=np.uint8)])
    return np.concatenate(result)


def pcmu_to_opus(signal8: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Trunk sends PCMU; our transcoder makes Opus; the browser decodes it at 48 kHz."""
    payloads = [g711.ulaw_encode(signal8[i : i + 160]) for i in range(0, len(signal8) - 159, 160)]
    transcoder = Transcoder("PCMU", "opus")
    decoder = OpusDecoder()
    result = []
    for packet, header in encode_stream(payloads, 0, 160):
        for out in transcoder.transcode(packet, header, 0.0):
            result.append(decoder.decode(bytes(out[12:])))
    return np.concatenate(result)


def test_tone_survives_opus_to_pcmu_and_back() -> None:
    narrow = opus_to_pcmu(tone(800, 1.0))
    assert abs(dominant_frequency(narrow[800:], 8000) - 800) < 10
    assert abs(rms_dbfs(narrow[800:]) - rms_dbfs(tone(800, 1.0))) < 1.0
    wide = pcmu_to_opus(tone(600, 1.0, rate=8000))
    assert abs(dominant_frequency(wide[4800:], 48000) - 600) < 10
    assert abs(rms_dbfs(wide[4800:]) - rms_dbfs(tone(600, 1.0))) < 1.0


def test_gap_is_concealed_with_the_missing_sequence_numbers() -> None:
    transcoder = Transcoder("PCMU", "PCMA")
    stream = encode_stream([g711.ulaw_encode(tone(500, 0.02, rate=8000))] * 6, 0, 160)
    out = []
    for i, (packet, header) in enumerate(stream):
        if i in (2, 3):
            continue  # lost
        out.extend(transcoder.transcode(packet, header, 0.0))
    headers = [parse_rtp(p) for p in out]
    assert [h.sequence_number for h in headers if isinstance(h, RtpHeader)] == [100, 101, 102, 103, 104, 105]
    assert transcoder.concealed == 2
    concealed_level = rms_dbfs(g711._ALAW_DECODE[np.frombuffer(bytes(out[2][12:]), dtype=np.uint8)])
    assert concealed_level < rms_dbfs(tone(500, 0.02)) - 5  # faded, not repeated at full level


def test_late_packet_after_concealment_is_dropped() -> None:
    transcoder = Transcoder("PCMU", "PCMA")
    stream = encode_stream([g711.ulaw_encode(tone(500, 0.02, rate=8000))] * 3, 0, 160)
    transcoder.transcode(*stream[0], 0.0)
    transcoder.transcode(*stream[2], 0.0)
    assert transcoder.transcode(*stream[1], 0.0) == []
    assert transcoder.late_dropped == 1


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> npt.NDArray[np.int16]:
    """About six seconds of English speech from espeak-ng, at 48 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng, listed in .ci/apt-packages.txt)")
    path: Path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = (
        "The quick brown fox jumps over the lazy dog. Please call me back at five five five, "
        "one two three four. Thank you for calling, goodbye."
    )
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, timeout=30)
    rate, data = wavfile.read(path)
    assert rate == 22050
    return resample_poly(data.astype(np.float64), 320, 147).clip(-32768, 32767).astype(np.int16)  # type: ignore[no-any-return]


def pesq_nb(reference8: npt.NDArray[np.int16], degraded8: npt.NDArray[np.int16]) -> float:
    from pesq import pesq

    n = min(len(reference8), len(degraded8))
    return float(pesq(8000, reference8[:n].astype(np.float64), degraded8[:n].astype(np.float64), "nb"))


def g711_alone(reference8: npt.NDArray[np.int16]) -> float:
    """The score of plain µ-law coding of the same speech: the ceiling for any path ending in G.711."""
    coded = g711._ULAW_DECODE[np.frombuffer(g711.ulaw_encode(reference8), dtype=np.uint8)]
    return pesq_nb(reference8, coded)


def test_pesq_of_speech_through_opus_to_pcmu(speech: npt.NDArray[np.int16]) -> None:
    reference = resample_poly(speech.astype(np.float64), 1, 6).astype(np.int16)
    score = pesq_nb(reference, opus_to_pcmu(speech))
    # Measured here: G.711 alone 3.92 on this speech, the whole Opus→resample→G.711 chain 3.74.
    assert score > g711_alone(reference) - 0.3, score


def test_pesq_of_speech_through_pcmu_to_opus(speech: npt.NDArray[np.int16]) -> None:
    narrow = resample_poly(speech.astype(np.float64), 1, 6).clip(-32768, 32767).astype(np.int16)
    wide = pcmu_to_opus(narrow)
    degraded = resample_poly(wide.astype(np.float64), 1, 6).clip(-32768, 32767).astype(np.int16)
    # Reference: what the trunk sent, i.e. the µ-law speech entering the transcoder. Measured: 4.18 at
    # complexity 1 (4.34 at 5; 4.06 when libopus ran at 48 kHz behind our resampler, complexity 5).
    sent = g711._ULAW_DECODE[np.frombuffer(g711.ulaw_encode(narrow), dtype=np.uint8)]
    score = pesq_nb(sent, degraded)
    assert score > 3.9, score


async def test_opus_browser_is_transcoded_to_pcmu_trunk_both_ways(browser: RTCPeerConnection) -> None:
    browser.addTrack(SignalTrack(tone(1000, 3.0)))
    await browser.setLocalDescription(await browser.createOffer())
    call = await MediaCall.outbound(MediaConfig(webrtc_codecs=("opus",)), browser.localDescription.sdp)
    peer = await RtpPeer.open()
    try:
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "answer"))
        call.set_trunk_remote_sdp(trunk_answer(peer.port))
        await asyncio.wait_for(call.web.connected.wait(), 15)
        assert call.relay is not None and not call.relay.passthrough
        assert call.web_params is not None and call.web_params.codec.name == "opus"
        await peer.wait_for(100)
        assert call.trunk is not None
        track = browser.getReceivers()[0].track
        payload = g711.ulaw_encode(tone(700, 2.0, rate=8000))
        playing = asyncio.ensure_future(
            peer.play(
                [payload[i : i + 160] for i in range(0, len(payload), 160)],
                ("127.0.0.1", call.trunk.local_port),
            )
        )
        frames = [(await asyncio.wait_for(track.recv(), 5)) for _ in range(80)]
        await playing
    finally:
        await call.close()
        peer.close()
    headers = [h for h, _, _ in peer.received]
    assert {h.payload_type for h in headers} == {0}
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(headers)} == {160}
    audio = np.concatenate([np.frombuffer(d[12:], dtype=np.uint8) for _, d, _ in peer.received[20:100]])
    samples = g711._ULAW_DECODE[audio]
    assert abs(dominant_frequency(samples, 8000) - 1000) < 20
    # aiortc's encoder upmixes our mono track to stereo at -3 dB per channel (ffmpeg's rematrix);
    # a mono decode of that stream is therefore 3 dB down before it ever reaches the relay.
    assert abs(rms_dbfs(samples) - (rms_dbfs(tone(1000, 1.0)) - 3.0)) < 1.0
    heard = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[-40:]])
    rate = frames[-1].sample_rate
    if frames[-1].layout.name == "stereo":
        heard = heard[::2]
    assert abs(dominant_frequency(heard, rate) - 700) < 20
    assert abs(rms_dbfs(heard) - rms_dbfs(tone(700, 1.0))) < 2.0


def test_resamplers_compute_exactly_the_polyphase_reference() -> None:
    """Framed, stateful numpy polyphase == scipy's one-shot upfirdn over the whole signal."""
    from scipy.signal import upfirdn

    from media.resample import _H

    rng = np.random.default_rng(1)
    wide = (rng.standard_normal(960 * 7) * 3000).astype(np.int16)
    framed = run_frames(Decimator().process, wide, 960)
    reference = np.clip(np.rint(upfirdn(_H, wide.astype(np.float64), down=6)[: len(framed)]), -32768, 32767)
    assert np.array_equal(framed, reference.astype(np.int16))
    narrow = (rng.standard_normal(160 * 7) * 3000).astype(np.int16)
    framed_up = run_frames(Interpolator().process, narrow, 160)
    reference_up = upfirdn(_H * 6, narrow.astype(np.float64), up=6)[: len(framed_up)]
    assert np.array_equal(framed_up, np.clip(np.rint(reference_up), -32768, 32767).astype(np.int16))


def test_lost_opus_packets_are_concealed_by_libopus_and_recovered_from_fec() -> None:
    from media.opus import OpusDecoder as NativeDecoder
    from media.transcoder import OpusEncoder

    if not NativeDecoder().native:
        pytest.skip("libopus could not be loaded through ctypes (PyAV fallback has no native PLC)")
    encoder = OpusEncoder(32000, complexity=10)
    signal = tone(440, 0.4)
    payloads = [encoder.encode(signal[i : i + 960])[0] for i in range(0, len(signal), 960)]
    transcoder = Transcoder("opus", "PCMU")
    out = []
    for i, (packet, header) in enumerate(encode_stream(payloads, 111, 960)):
        if i in (10, 11):
            continue
        out.extend(transcoder.transcode(packet, header, 0.0))
    headers = [parse_rtp(p) for p in out]
    assert [h.sequence_number for h in headers if isinstance(h, RtpHeader)] == list(range(100, 120))
    assert transcoder.concealed == 2
    # libopus's PLC (first) and FEC recovery (second) carry the tone on, not silence or a fade to zero.
    for concealed in out[10:12]:
        samples = g711._ULAW_DECODE[np.frombuffer(bytes(concealed[12:]), dtype=np.uint8)]
        assert abs(dominant_frequency(samples, 8000) - 440) < 60
        assert rms_dbfs(samples) > rms_dbfs(tone(440, 0.02)) - 10


def _lag(reference: npt.NDArray[np.float64], received: npt.NDArray[np.float64], limit: int) -> int:
    """The delay of ``received`` behind ``reference`` in samples, by cross-correlation."""
    n = min(len(reference), len(received))
    corr = np.correlate(received[:n], reference[: n - limit], "valid")
    return int(np.argmax(corr))


def _band_limited_noise(seconds: float) -> npt.NDArray[np.int16]:
    from scipy.signal import firwin, lfilter

    rng = np.random.default_rng(7)
    noise = rng.standard_normal(int(48000 * seconds)) * 6000
    return lfilter(firwin(255, 3000, fs=48000), 1.0, noise).clip(-32768, 32767).astype(np.int16)  # type: ignore[no-any-return]


def test_opus_to_pcmu_delay_is_exactly_the_codec_lookahead() -> None:
    """Sample-accurate: libopus's lookahead (312 samples at 48 kHz, 6.5 ms) = 52 samples at 8 kHz and
    nothing else — libopus decodes straight to 8 kHz, so no resampler of ours and no buffering in the path."""
    from media.transcoder import OpusEncoder

    signal = _band_limited_noise(1.0)
    encoder = OpusEncoder(32000, complexity=10)
    transcoder = Transcoder("opus", "PCMU")
    out = []
    for packet, header in encode_stream(
        [encoder.encode(signal[i : i + 960])[0] for i in range(0, 48000, 960)], 111, 960
    ):
        out.extend(
            g711._ULAW_DECODE[np.frombuffer(bytes(p[12:]), dtype=np.uint8)]
            for p in transcoder.transcode(packet, header, 0.0)
        )
    received = np.concatenate(out).astype(np.float64)
    reference = resample_poly(signal.astype(np.float64), 1, 6)  # zero-phase: no delay of its own
    expected = encoder.lookahead / 6  # 52; measured 52
    assert abs(_lag(reference, received, 200) - expected) <= 1


def test_pcmu_to_opus_delay_is_exactly_the_codec_lookahead() -> None:
    signal8 = (
        resample_poly(_band_limited_noise(1.0).astype(np.float64), 1, 6).clip(-32768, 32767).astype(np.int16)
    )
    transcoder = Transcoder("PCMU", "opus")
    decoder = OpusDecoder()
    payloads = [g711.ulaw_encode(signal8[i : i + 160]) for i in range(0, 8000, 160)]
    out = [
        decoder.decode(bytes(p[12:]))
        for packet, header in encode_stream(payloads, 0, 160)
        for p in transcoder.transcode(packet, header, 0.0)
    ]
    received = np.concatenate(out).astype(np.float64)
    sent = g711._ULAW_DECODE[np.frombuffer(b"".join(payloads), dtype=np.uint8)].astype(np.float64)
    reference = resample_poly(sent, 6, 1)
    from media.opus import OpusEncoder as Encoder

    expected = Encoder(sample_rate=8000).lookahead * 6
    # 52 samples at 8 kHz = 312 at 48 kHz (6.5 ms); measured 315 with libopus 1.3.1 and 316 with 1.6.1:
    # libopus's 8 kHz input path resamples internally. Within 6 samples (125 µs) there is no room for any
    # buffering in our path (the least would be a frame, 960).
    assert abs(_lag(reference, received, 1200) - expected) <= 6


def test_thirty_ms_trunk_frames_become_one_opus_packet_each() -> None:
    """A 30 ms G.711 trunk (as sipp's g711a.pcap is): no single Opus frame lasts 30 ms, so each packet
    becomes three 10 ms frames in one Opus packet, keeping the one-in, one-out numbering."""
    transcoder = Transcoder("PCMU", "opus")
    decoder = OpusDecoder()
    signal = tone(600, 0.6, rate=8000)
    payloads = [g711.ulaw_encode(signal[i : i + 240]) for i in range(0, len(signal), 240)]
    out = [
        p
        for packet, header in encode_stream(payloads, 0, 240)
        for p in transcoder.transcode(packet, header, 0.0)
    ]
    assert len(out) == len(payloads)
    assert transcoder.codec_errors == 0
    decoded = [decoder.decode(bytes(p[12:])) for p in out]
    assert {len(d) for d in decoded} == {1440}
    wide = np.concatenate(decoded)
    assert abs(dominant_frequency(wide[4800:], 48000) - 600) < 10


def test_payload_no_codec_can_frame_is_dropped_and_counted() -> None:
    transcoder = Transcoder("PCMU", "opus")
    stream = encode_stream([b"\xff"], 0, 1)
    assert transcoder.transcode(*stream[0], 0.0) == []
    assert transcoder.codec_errors == 1
