"""Headless Chromium (Debian ``chromium``) as the browser: real Chrome offer, media and DTMF via our relay."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from tests.media.peers import tone

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_chromium_tone_and_dtmf_reach_the_trunk(tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip (util-linux, iproute2) are not installed")
    wav = tmp_path / "tone.wav"
    wavfile.write(wav, 48000, np.tile(tone(1000, 1.0), 10))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "media" / "chromium_scenario.py"
    completed = subprocess.run(
        [
            "unshare",
            "-n",
            "--",
            "sh",
            "-c",
            f'ip link set lo up && exec "{sys.executable}" "{script}" "{wav}"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["codec"] == "PCMU"
    assert result["passthrough"] is True
    assert result["packets"] >= 150
    assert abs(result["frequency"] - 1000) < 20
    # Chrome's audio processing changes the level; the tone is there, well above silence.
    assert result["level_dbfs"] > -40
    assert result["digits"] == ["1", "5", "9", "#"]
    assert result["trunk_event_packets"] >= 4 * 4
    assert result["counters"]["unauthenticated"] == 0
