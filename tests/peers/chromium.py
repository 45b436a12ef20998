"""Headless Chromium (Debian ``chromium``) driven over the DevTools protocol, for tests that need what a
browser really sends. Run it inside a network namespace with only ``lo`` (TESTING.md): otherwise Chromium
gathers candidates on every interface and may pick a non-loopback one."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
]


class DevTools:
    """``Runtime.evaluate`` on one page; awaits promises and returns values."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def evaluate(self, expression: str, reply_within: float = 30) -> Any:
        request_id = next(self.ids)
        await self.ws.send_json(
            {
                "id": request_id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True, "returnByValue": True},
            }
        )
        while True:
            message = await self.ws.receive_json(timeout=reply_within)
            if message.get("id") == request_id:
                result = message.get("result", {})
                if "exceptionDetails" in result:
                    raise RuntimeError(json.dumps(result["exceptionDetails"])[:500])
                return result.get("result", {}).get("value")


@asynccontextmanager
async def chromium_page(url: str, microphone_wav: str) -> AsyncIterator[DevTools]:
    """Chromium with a fresh profile, the WAV file as its microphone, showing ``url``."""
    profile = tempfile.mkdtemp(prefix="telebridge-chromium-")
    browser = await asyncio.create_subprocess_exec(
        shutil.which("chromium") or "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json") as response:
                targets = await response.json()
            page = next(t for t in targets if t["type"] == "page" and t["url"].startswith(url))
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        if browser.returncode is None:
            browser.terminate()
            try:
                await asyncio.wait_for(browser.wait(), 5)
            except TimeoutError:
                browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
