"""The acceptance test: matrix-js-sdk's own MatrixCall (the code Element runs), in headless Chromium,
calls a phone number's virtual user through Synapse and the bridge to sipp, hears its audio back, and
presses digits on the in-call dial pad that reach the trunk in order.

Everything runs in a private network namespace with only ``lo`` (``unshare -n``), so Chromium cannot pick
a non-loopback candidate (TESTING.md).
"""

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
PEERS = ROOT / "tests" / "peers"

pytestmark = [pytest.mark.synapse, pytest.mark.slow]


@pytest.mark.parametrize("dtmf", ["rfc4733", "info"])
def test_element_call_code_reaches_the_trunk_and_hears_it(tmp_path: Path, dtmf: str) -> None:
    """``dtmf``: the trunk negotiates telephone-event (digits go on in RTP), or it does not and takes
    them as SIP INFO."""
    for tool in ("chromium", "unshare", "ip", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (CI installs it)")
    esbuild = PEERS / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("tests/peers node_modules are not installed (CI runs npm ci)")
    bundle = tmp_path / "call.bundle.js"
    subprocess.run(
        [
            str(esbuild),
            str(Path(__file__).parent / "element" / "call.js"),
            "--bundle",
            "--format=iife",
            "--platform=browser",
            "--log-level=warning",
            f"--outfile={bundle}",
        ],
        check=True,
        env={**os.environ, "NODE_PATH": str(PEERS / "node_modules")},
        timeout=120,
    )
    wav = tmp_path / "tone.wav"
    wavfile.write(wav, 48000, np.tile(tone(1000, 1.0), 20))
    workdir = tmp_path / "world"
    workdir.mkdir()
    script = Path(__file__).parent / "element_call_scenario.py"
    completed = subprocess.run(
        [
            "unshare",
            "-n",
            "--",
            "sh",
            "-c",
            f'ip link set lo up && exec "{sys.executable}" "{script}" "{bundle}" "{wav}" "{workdir}" uas_dtmf_{dtmf}.xml',
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["states"][-2:] == ["connected", "ended"], result["states"]
    assert abs(result["frequency"] - 1000) < 20, "the tone went to sipp, was echoed, and came back"
    assert result["level"] > -60
    assert result["dtmf"] is True, "Element shows its in-call dial pad"
    sent = result["digitsSent"]
    assert result["digits"]["webrtc"] == sent, "the bridge heard the dial pad's RFC 4733 events in order"
    if dtmf == "rfc4733":
        assert result["digits"]["trunk"] == sent, "the trunk received them in order (and sipp echoed them)"
        assert result["digits"]["sip_info"] == ""
    else:
        # sipp's scenario checks each INFO body (Signal=1, 5, 9, #) in order; a mismatch fails its call.
        assert result["digits"]["sip_info"] == sent
    assert result["sipp_exit"] == 0, "the trunk saw INVITE, 200, ACK, its DTMF, and the BYE of the hang-up"
