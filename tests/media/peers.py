"""Test peers on 127.0.0.1: an aiortc RTCPeerConnection as the browser, a plain RTP socket as the trunk."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from av import AudioFrame

from media.rtp import RtpHeader, build_rtp, parse_rtp

SAMPLE_RATE = 48000
FRAME = 960


class SignalTrack(MediaStreamTrack):
    """Sends a fixed signal (48 kHz mono int16) in real time, then silence; paced like a microphone."""

    kind = "audio"

    def __init__(self, signal: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self.signal = signal
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            delay = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        chunk = self.signal[self._pts : self._pts + FRAME]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.int16)])
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


def tone(freq: float, seconds: float, rate: int = SAMPLE_RATE, level: float = 0.3) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (level * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_frequency(samples: npt.NDArray[Any], rate: int) -> float:
    x = samples.astype(np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def rms_dbfs(samples: npt.NDArray[Any]) -> float:
    x = samples.astype(np.float64) / 32768
    return float(20 * np.log10(np.sqrt(np.mean(x * x)) + 1e-12))


class RtpPeer(asyncio.DatagramProtocol):
    """A trunk-side endpoint: records what arrives, sends what it is told."""

    def __init__(self) -> None:
        self.received: list[tuple[RtpHeader, bytes, tuple[str, int]]] = []
        self.other: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    @classmethod
    async def open(cls) -> RtpPeer:
        peer = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        return peer

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        header = parse_rtp(data)
        if isinstance(header, RtpHeader):
            self.received.append((header, data, addr))
            self.arrived.set()
        else:
            self.other.append(data)

    async def wait_for(self, count: int, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while len(self.received) < count and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib_suppress_timeout():
                await asyncio.wait_for(self.arrived.wait(), 0.5)

    def send_to(self, data: bytes | bytearray, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(data), addr)

    async def play(
        self,
        payloads: list[bytes],
        addr: tuple[str, int],
        pt: int = 0,
        ssrc: int = 0x1234,
        samples: int = 160,
    ) -> None:
        """Send payloads as a paced RTP stream (20 ms apart), bounded by the list's length."""
        start = time.monotonic()
        for i, payload in enumerate(payloads):
            self.send_to(build_rtp(pt, 1000 + i, 5000 + i * samples, ssrc, payload, marker=i == 0), addr)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class contextlib_suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is TimeoutError


def trunk_answer(port: int, codec: str = "PCMU", pt: int = 0, te_pt: int = 101) -> str:
    return (
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt} {te_pt}\r\na=rtpmap:{pt} {codec}/8000\r\n"
        f"a=rtpmap:{te_pt} telephone-event/8000\r\na=fmtp:{te_pt} 0-16\r\na=ptime:20\r\n"
    )
