"""Browser → relay → trunk echo → relay → browser: the signal comes back intact and sample-accurate."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection
from scipy.signal import chirp, resample_poly

from media.rtp import RtpHeader, parse_rtp
from tests.media.peers import RtpPeer
from tests.media.test_passthrough import connect_outbound


class EchoPeer(RtpPeer):
    """The trunk side sends every packet straight back (what ``sipp -rtp_echo`` does)."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        header = parse_rtp(data)
        if isinstance(header, RtpHeader):
            self.received.append((header, data, addr))
            self.send_to(data, addr)


def burst(rate: int) -> npt.NDArray[np.float64]:
    t = np.arange(int(0.25 * rate)) / rate
    return chirp(t, 300, t[-1], 3000) * np.hanning(len(t))  # type: ignore[no-any-return]


async def test_two_bursts_one_second_apart_come_back_exactly_one_second_apart(
    browser: RTCPeerConnection,
) -> None:
    rate = 48000
    signal = np.zeros(int(3.5 * rate))
    for start in (0.3, 1.3):  # two chirps exactly 1.000 s apart
        at = int(start * rate)
        signal[at : at + len(burst(rate))] += 0.4 * 32767 * burst(rate)
    call, first_peer = await connect_outbound(browser, signal.astype(np.int16))
    first_peer.close()  # the trunk moves to the echoing peer below (a second answer, as after a 183)
    echo = await EchoPeer.open()
    try:
        assert call.trunk is not None
        call.set_trunk_remote_sdp(
            "v=0\r\no=peer 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {echo.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        )
        track = browser.getReceivers()[0].track
        frames = [await asyncio.wait_for(track.recv(), 5) for _ in range(150)]  # 3 s, bounded
    finally:
        await call.close()
        echo.close()
    heard_rate = frames[-1].sample_rate
    heard = np.concatenate([f.to_ndarray().reshape(-1)[:: len(f.layout.channels)] for f in frames]).astype(
        np.float64
    )
    narrow = resample_poly(heard, 8000, heard_rate) if heard_rate != 8000 else heard
    template = burst(8000)
    corr = np.correlate(narrow, template, "valid")
    energy = np.sqrt(np.convolve(narrow**2, np.ones(len(template)), "valid") * np.sum(template**2)) + 1e-9
    score = corr / energy
    first = int(np.argmax(score))
    masked = score.copy()
    masked[max(first - 4000, 0) : first + 4000] = -1
    second = int(np.argmax(masked))
    # Both bursts came back undistorted (normalised correlation near 1) ...
    assert score[first] > 0.9 and score[second] > 0.9, (score[first], score[second])
    # ... and exactly as far apart as they were sent: nothing in the round trip stretched or dropped time.
    assert abs(abs(second - first) - 8000) <= 2, abs(second - first)
