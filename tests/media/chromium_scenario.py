"""Runs inside a private network namespace (only ``lo``): headless Chromium calls through our relay.

Started by ``test_chromium.py`` as ``unshare -n -- sh -c 'ip link set lo up && exec python …'`` (the
TESTING.md recipe: Chromium otherwise gathers candidates on every interface and may pick a non-loopback
one). Chromium is driven over the DevTools protocol with aiohttp; it captures a WAV file as its
microphone, offers to our relay, sends DTMF with ``RTCDTMFSender``; a plain RTP socket is the trunk.
Prints one JSON object with what was observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import numpy as np
from aiohttp import web

from media import g711
from media.call import MediaCall, MediaConfig
from tests.media.peers import RtpPeer, dominant_frequency, rms_dbfs, trunk_answer
from tests.peers.chromium import chromium_page

OFFER_JS = """
(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  window.pc = new RTCPeerConnection({iceServers: []});
  stream.getTracks().forEach(t => window.pc.addTrack(t, stream));
  await window.pc.setLocalDescription(await window.pc.createOffer());
  await new Promise(resolve => {
    if (window.pc.iceGatheringState === 'complete') return resolve();
    window.pc.addEventListener('icegatheringstatechange', () => {
      if (window.pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 3000);
  });
  return window.pc.localDescription.sdp;
})()
"""


async def serve_page() -> tuple[web.AppRunner, str]:
    """A blank page on http://127.0.0.1 (a secure context, so getUserMedia exists; about:blank has none)."""
    app = web.Application()
    app.router.add_get(
        "/",
        lambda request: web.Response(text="<html><body>telebridge</body></html>", content_type="text/html"),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def main(wav: str) -> dict[str, Any]:
    page_server, url = await serve_page()
    result: dict[str, Any] = {}
    call: MediaCall | None = None
    peer: RtpPeer | None = None
    try:
        async with chromium_page(url, wav) as devtools:
            ready = None
            for _ in range(100):  # the page may still be loading when its target appears
                ready = await devtools.evaluate("[location.href, !!navigator.mediaDevices, isSecureContext]")
                if ready and ready[1]:
                    break
                await asyncio.sleep(0.1)
            if not (ready and ready[1]):
                raise RuntimeError(f"page never got navigator.mediaDevices: {ready}")
            offer = await devtools.evaluate(OFFER_JS)
            digits: list[str] = []

            def on_event(kind: str, data: dict[str, Any]) -> None:
                if kind == "digit":
                    digits.append(data["digit"])

            call = await MediaCall.outbound(MediaConfig(), offer, on_event)
            answer = str(call.webrtc_local_sdp)
            await devtools.evaluate(
                f"window.pc.setRemoteDescription({{type: 'answer', sdp: {json.dumps(answer)}}}).then(() => true)"
            )
            peer = await RtpPeer.open()
            call.set_trunk_remote_sdp(trunk_answer(peer.port))
            await asyncio.wait_for(call.web.connected.wait(), 20)
            await peer.wait_for(150, 10)
            await devtools.evaluate(
                "(async () => { window.pc.getSenders()[0].dtmf.insertDTMF('159#', 120, 80); "
                "await new Promise(r => setTimeout(r, 1500)); return true; })()"
            )
            await asyncio.sleep(0.3)
            assert call.web_params is not None and call.relay is not None
            audio = [d[12:] for h, d, _ in peer.received[50:150] if h.payload_type == 0]
            samples = g711.ulaw_decode(b"".join(audio)) if audio else np.zeros(1, dtype=np.int16)
            result = {
                "codec": call.web_params.codec.name,
                "passthrough": call.relay.passthrough,
                "packets": len(peer.received),
                "frequency": dominant_frequency(samples, 8000),
                "level_dbfs": rms_dbfs(samples),
                "digits": digits,
                "trunk_event_packets": sum(1 for h, _, _ in peer.received if h.payload_type == 101),
                "counters": call.web.counter_totals(),
            }
    finally:
        if call is not None:
            await call.close()
        if peer is not None:
            peer.close()
        await page_server.cleanup()
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
