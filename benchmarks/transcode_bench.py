"""Transcoding cost per 20 ms frame, in-process: the 8 kHz path against the old 48 kHz one, same run.

Run from the repository root (a few seconds; wrap in ``flock /tmp/bench.lock`` on the shared machine)::

    PYTHONPATH=. python benchmarks/transcode_bench.py
    PYTHONPATH=. python benchmarks/transcode_bench.py --complexity 1 5 --json

Both directions of an Opus ⇄ PCMU call are timed over espeak-ng speech (the codecs' cost depends on the
signal): *Opus→PCMU* gets what a browser sends (32 kb/s, complexity 10, 48 kHz), *PCMU→Opus* gets µ-law
speech. ``8k`` is :class:`media.transcoder.Transcoder` as it runs now (libopus decodes to and encodes from
8 kHz); ``48k`` rebuilds the previous chain from the same parts — libopus at 48 kHz with our polyphase
resampler (:mod:`media.resample`) in between; ``C`` is the C transcoder calls use when the extension is
built (:func:`media.transcoder.new_transcoder`; its ratio is against ``8k``). Each figure is the best of ``--repeat`` passes (the machine
is shared: the minimum is the least disturbed), and the ratio compares the two within this run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.media_bench import _speech
from media import g711
from media.opus import OpusDecoder, OpusEncoder
from media.resample import Decimator, Interpolator
from media.rtp import RtpHeader, build_rtp, parse_rtp
from media.transcoder import Transcoder, new_transcoder

Int16Array = npt.NDArray[np.int16]


class _Chain48:
    """The transcoder as it was: libopus at 48 kHz, our 48 ⇄ 8 kHz resampler between (same parts)."""

    def __init__(self, source: str, complexity: int) -> None:
        if source == "opus":
            decoder = OpusDecoder(48000)
            decimate = Decimator().process
            self.run: Callable[[bytes], list[bytes]] = lambda p: [
                g711.ulaw_encode(decimate(decoder.decode(p)))
            ]
        else:
            encoder = OpusEncoder(24000, complexity, 48000)
            interpolate = Interpolator().process
            self.run = lambda p: encoder.encode(interpolate(g711.ulaw_decode(p)))


def _packets(payloads: list[bytes], pt: int, step: int) -> list[tuple[bytearray, RtpHeader]]:
    out = []
    for i, payload in enumerate(payloads):
        packet = build_rtp(pt, i, i * step, 0x42, payload)
        header = parse_rtp(packet)
        assert isinstance(header, RtpHeader)
        out.append((packet, header))
    return out


def _best(run: Callable[[], None], frames: int, repeat: int) -> float:
    """µs per frame, best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / frames * 1e6


def measure(complexity: int, repeat: int) -> dict[str, Any]:
    speech = _speech()
    frames48 = [speech[i : i + 960] for i in range(0, len(speech) - 959, 960)]
    browser = OpusEncoder(32000, complexity=10)
    opus = [browser.encode(f)[0] for f in frames48]
    decimator = Decimator()
    pcmu = [g711.ulaw_encode(decimator.process(f)) for f in frames48]
    opus_packets, pcmu_packets = _packets(opus, 111, 960), _packets(pcmu, 0, 160)
    result: dict[str, Any] = {"complexity": complexity, "frames": len(opus)}
    for name, source, packets, payloads in (
        ("opus_to_pcmu", "opus", opus_packets, opus),
        ("pcmu_to_opus", "PCMU", pcmu_packets, pcmu),
    ):
        target = "PCMU" if source == "opus" else "opus"

        def new_path(source: str = source, target: str = target, packets: Any = packets) -> None:
            transcoder = Transcoder(source, target, complexity=complexity)
            for packet, header in packets:
                transcoder.transcode(packet, header, 0.0)

        def c_path(source: str = source, target: str = target, packets: Any = packets) -> None:
            transcoder = new_transcoder(source, target, complexity=complexity)
            for packet, header in packets:
                transcoder.transcode(packet, header, 0.0)

        def old_path(source: str = source.lower(), payloads: list[bytes] = payloads) -> None:
            run = _Chain48(source, complexity).run
            for payload in payloads:
                run(payload)

        # Interleaved, so a burst of other work on the machine hits both alike.
        new, old, native = float("inf"), float("inf"), float("inf")
        for _ in range(repeat):
            new = min(new, _best(new_path, len(packets), 1))
            old = min(old, _best(old_path, len(packets), 1))
            native = min(native, _best(c_path, len(packets), 1))
        result[name] = {
            "8k_us": round(new, 1),
            "48k_us": round(old, 1),
            "ratio": round(old / new, 2),
            "c_us": round(native, 1),
            "c_ratio": round(new / native, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--complexity", type=int, nargs="+", default=[5], help="encoder complexities")
    parser.add_argument("--repeat", type=int, default=5, help="passes per figure (best is kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    rows = [measure(c, args.repeat) for c in args.complexity]
    print(f"{'direction':<14}{'complexity':>11}{'48k µs':>9}{'8k µs':>9}{'ratio':>8}{'C µs':>9}{'ratio':>8}")
    for row in rows:
        for name in ("opus_to_pcmu", "pcmu_to_opus"):
            r = row[name]
            print(
                f"{name:<14}{row['complexity']:>11}{r['48k_us']:>9.1f}{r['8k_us']:>9.1f}{r['ratio']:>7.2f}x"
                f"{r['c_us']:>9.1f}{r['c_ratio']:>7.2f}x"
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
