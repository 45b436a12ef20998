"""sipp as the trunk (Debian sip-tester): real G.711 A-law and RFC 2833 captures played into an inbound call.

sip/ is another package; this test answers sipp's INVITE with the smallest UAS that will do (enough of RFC
3261 §8.2.6 for one call on 127.0.0.1) so that what is tested is the media path.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media.call import MediaCall, MediaConfig
from media.rtp import RtpHeader

SCENARIO = Path(__file__).parent / "sipp" / "uac_dtmf_pcap.xml"


class TinyUas(asyncio.DatagramProtocol):
    """Answers one INVITE with our trunk SDP, and BYE with 200."""

    def __init__(self, on_invite: Any) -> None:
        self.on_invite = on_invite
        self.transport: asyncio.DatagramTransport | None = None
        self.bye = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        method = lines[0].split(" ", 1)[0]
        if method == "INVITE":
            task = asyncio.ensure_future(self._answer(lines, body, addr))
            self.tasks.add(task)
        elif method == "BYE":
            self._reply(lines, "", addr)
            self.bye.set()

    async def _answer(self, lines: list[str], body: str, addr: Any) -> None:
        sdp = await self.on_invite(body)
        self._reply(lines, sdp, addr, to_tag=";tag=media-test")

    def _reply(self, lines: list[str], sdp: str, addr: Any, to_tag: str = "") -> None:
        keep = [
            line
            for line in lines[1:]
            if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        keep = [line + to_tag if line.lower().startswith("to:") else line for line in keep]
        extra = ["Contact: <sip:uas@127.0.0.1>"]
        if sdp:
            extra.append("Content-Type: application/sdp")
        message = "\r\n".join(["SIP/2.0 200 OK", *keep, *extra, f"Content-Length: {len(sdp)}", "", sdp])
        assert self.transport is not None
        self.transport.sendto(message.encode(), addr)


@pytest.mark.slow
async def test_sipp_pcap_audio_and_rfc2833_digits_reach_the_browser_side(
    browser: RTCPeerConnection, tmp_path: Path
) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (Debian package sip-tester, listed in .ci/apt-packages.txt)")
    events: list[tuple[str, dict[str, Any]]] = []
    calls: list[MediaCall] = []
    received: list[RtpHeader] = []

    async def on_invite(offer: str) -> str:
        call = await MediaCall.inbound(MediaConfig(), offer, lambda k, d: events.append((k, d)))
        calls.append(call)
        assert call.webrtc_local_sdp is not None and call.trunk_local_sdp is not None
        await browser.setRemoteDescription(RTCSessionDescription(str(call.webrtc_local_sdp), "offer"))
        await browser.setLocalDescription(await browser.createAnswer())
        call.set_webrtc_answer(browser.localDescription.sdp)
        await asyncio.wait_for(call.web.connected.wait(), 15)
        assert call.relay is not None
        original = call.relay.from_trunk

        def spy(packet: bytearray, header: RtpHeader, now: float) -> None:
            received.append(header)
            original(packet, header, now)

        assert call.trunk is not None
        call.trunk.on_rtp = spy
        return str(call.trunk_local_sdp)

    loop = asyncio.get_running_loop()
    transport, uas = await loop.create_datagram_endpoint(
        lambda: TinyUas(on_invite), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    process = await asyncio.create_subprocess_exec(
        "sipp",
        f"127.0.0.1:{port}",
        "-sf",
        str(SCENARIO),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        "0",
        "-mp",
        "0",
        "-timeout",
        "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp_errors.log"),
        "-bg" if False else "-nd",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    frames: list[np.ndarray] = []
    try:
        track = None
        for _ in range(100):
            if calls and calls[0].web.connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert calls, "sipp did not call"
        receivers = browser.getReceivers()
        track = receivers[0].track
        for _ in range(60):  # 1.2 s of what the browser hears while the capture plays
            frame = await asyncio.wait_for(track.recv(), 5)
            frames.append(frame.to_ndarray().reshape(-1))
        _, stderr = await asyncio.wait_for(process.communicate(), 40)
        assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
        await asyncio.wait_for(uas.bye.wait(), 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        transport.close()
        for call in calls:
            await call.close()
    call = calls[0]
    assert call.relay is not None and call.relay.passthrough
    assert call.trunk_params is not None and call.trunk_params.codec.name == "PCMA"
    assert [d for k, d in events if k == "digit"] == [
        {"leg": "trunk", "digit": "1", "relayed": False},
        {"leg": "trunk", "digit": "9", "relayed": False},
        {"leg": "trunk", "digit": "#", "relayed": False},
    ]
    assert {h.payload_type for h in received} == {8, 101}
    heard = np.concatenate(frames[-30:]).astype(np.float64)
    assert np.sqrt(np.mean(heard**2)) > 100  # the capture's speech, not silence
