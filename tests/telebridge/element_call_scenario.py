"""Runs inside a private network namespace (only ``lo``, TESTING.md's recipe for Chromium): Synapse, the
bridge with calls on, ``sipp -rtp_echo`` as the trunk (a scenario of ``scenarios/``, named on the command
line: it says how the trunk takes DTMF), and headless Chromium running matrix-js-sdk's own
``MatrixCall`` (the code Element runs) to place a voice call to a phone number's virtual user.

Started by ``test_element_call.py``; prints one JSON object with what the page observed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.peers.chromium import chromium_page
from tests.peers.matrix import bridged_homeserver, free_port, wait_until


async def serve_page(bundle: str) -> tuple[web.AppRunner, str]:
    """The bundled call code on http://127.0.0.1 (a secure context, so getUserMedia exists)."""
    app = web.Application()
    app.router.add_get(
        "/",
        lambda request: web.Response(
            text='<html><body><script src="/call.js"></script></body></html>', content_type="text/html"
        ),
    )
    app.router.add_get("/call.js", lambda request: web.Response(text=bundle, content_type="text/javascript"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


async def in_browser(bundle: str, wav: str, base_url: str, user_id: str, token: str, room_id: str) -> Any:
    page_server, url = await serve_page(bundle)
    try:
        async with chromium_page(url, wav) as devtools:
            for _ in range(100):  # the page may still be loading when its target appears
                if await devtools.evaluate("typeof window.placeCall === 'function'"):
                    break
                await asyncio.sleep(0.1)
            args = ", ".join(json.dumps(a) for a in (base_url, user_id, token, room_id))
            return await devtools.evaluate(f"window.placeCall({args})", reply_within=90)
    finally:
        await page_server.cleanup()


SCENARIOS = Path(__file__).parent / "scenarios"


def digits_heard(log: str, leg: str) -> str:
    """The digits the bridge's media logged as received on ``leg``, in order."""
    return "".join(re.findall(rf"DTMF (\S) from the {leg} leg", log))


def main(bundle_path: str, wav: str, workdir: str, trunk_scenario: str) -> dict[str, Any]:
    trunk_port = free_port()
    sipp = subprocess.Popen(
        [
            *(
                "sipp",
                "-sf",
                str(SCENARIOS / trunk_scenario),
                "-rtp_echo",
                "-i",
                "127.0.0.1",
                "-p",
                str(trunk_port),
                "-mi",
                "127.0.0.1",
            ),
            *("-mp", "26000", "-m", "1", "-timeout", "60s", "-nostdin"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "TELEBRIDGE_CALLS__ENABLED": "true",
        "TELEBRIDGE_CALLS__SIP_PORT": str(free_port()),
        "TELEBRIDGE_CALLS__TRUNK": f"127.0.0.1:{trunk_port}",
        "TELEBRIDGE_CALLS__CALLER_ID": "+441632960001",
        "TELEBRIDGE_CALLS__MEDIA_WORKERS": "1",
    }
    try:
        with bridged_homeserver(Path(workdir), env) as (synapse, bridge):
            alice = synapse.register("alice")
            phone = alice.thirdparty_user("m.protocol.pstn", **{"m.id.phone": "+15005550123"})[0]["userid"]
            room_id = alice.create_dm(phone)
            wait_until(lambda: phone in alice.joined_members(room_id), what="the virtual user to join")
            bundle = Path(bundle_path).read_text()
            result = asyncio.run(in_browser(bundle, wav, synapse.url, alice.user_id, alice.token, room_id))
            result["sipp_exit"] = sipp.wait(timeout=30)
            # sipp echoes every RTP packet it receives, telephone-events included: digits the bridge hears
            # back on its trunk leg are digits the trunk received.
            log = bridge.log_text()
            result["digits"] = {leg: digits_heard(log, leg) for leg in ("webrtc", "trunk")}
            result["digits"]["sip_info"] = "".join(
                re.findall(r"DTMF (\S) sent to the trunk as SIP INFO", log)
            )
            return dict(result)
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(main(*sys.argv[1:5])))
