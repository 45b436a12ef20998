"""Configuration and the command line, as an operator meets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from telebridge.config import Config, ConfigError, example_config_text
from tests.peers.matrix import REPO, BridgeProcess, wait_until


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telebridge", *args],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_every_key_has_a_comment() -> None:
    Config.load(None, environ={})
    lines = example_config_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith('"'):
            continue
        assert (
            lines[i - 1].strip().startswith("#")
            or (lines[i - 1].strip().endswith(":") and lines[i - 2].strip().startswith("#"))
            or _previous_key_shares_comment(lines, i)
        ), line


def _previous_key_shares_comment(lines: list[str], i: int) -> bool:
    """Keys grouped under one comment (hostname/port) share it."""
    j = i - 1
    while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("#"):
        j -= 1
    return j >= 0 and lines[j].strip().startswith("#")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("homeserver:\n    address: not-a-url\n", "homeserver.address"),
        ("appservice:\n    port: 99999\n", "appservice.port"),
        ("appservice:\n    port: eighty\n", "appservice.port"),
        ("appservice:\n    database: mysql://x\n", "appservice.database"),
        ("bridge:\n    default_region: england\n", "bridge.default_region"),
        ("bridge:\n    permissions:\n        '*': superuser\n", "bridge.permissions"),
        ("bridge:\n    permissions: everyone\n", "bridge.permissions"),
        ("bridge:\n    user_prefix: 'Bad Prefix'\n", "bridge.user_prefix"),
        ("homeserver:\n    domain: null\n", "homeserver.domain"),
        ("homeserver:\n    adress: http://x\n", "homeserver.adress"),
        ("metrics:\n    enabled: maybe\n", "metrics.enabled"),
        ("calls:\n    webrtc_port_min: 40000\n", "calls.webrtc_port_max"),
        ("calls:\n    media_workers: many\n", "calls.media_workers"),
        ("calls:\n    media_realtime_priority: 100\n", "calls.media_realtime_priority"),
        ("calls:\n    media_spare_calls: -1\n", "calls.media_spare_calls"),
        ("calls:\n    rtp_strict_source: sometimes\n", "calls.rtp_strict_source"),
        ("sms:\n    keywords:\n        help: [STOP]\n", "sms.keywords.help"),
        ("sms:\n    keywords:\n        start: []\n", "sms.keywords.start"),
        ("sms:\n    keywords:\n        stop: ['two words']\n", "sms.keywords.stop"),
        (
            "calls:\n    ice_servers: [{urls: 'stun:127.0.0.1'}]\n    ice_relay_only: true\n",
            "calls.ice_relay_only",
        ),
    ],
)
def test_a_wrong_value_is_reported_naming_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.load(write(tmp_path, text), environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "homeserver:\n    address: http://file:8008\n")
    config = Config.load(
        path,
        environ={"TELEBRIDGE_HOMESERVER__ADDRESS": "http://env:8008", "TELEBRIDGE_APPSERVICE__PORT": "1234"},
    )
    assert config["homeserver.address"] == "http://env:8008"
    assert config["appservice.port"] == 1234
    with pytest.raises(ConfigError, match="TELEBRIDGE_NOPE"):
        Config.load(path, environ={"TELEBRIDGE_NOPE": "1"})


def test_bad_config_stops_startup_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    write(tmp_path, "appservice:\n    port: -1\n    as_token: a\n    hs_token: b\n")
    result = run_cli(tmp_path, "-c", "config.yaml", "-r", "registration.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "appservice.port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("generate", [[], ["-g"]])
def test_files_that_cannot_be_written_are_one_clear_line(tmp_path: Path, generate: list[str]) -> None:
    result = run_cli(tmp_path, "-c", "missing/config.yaml", "-r", "registration.yaml", *generate)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot write" in result.stderr and "missing/config.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_one_clear_line(tmp_path: Path) -> None:
    write(tmp_path, "homeserver: [unclosed\n")
    result = run_cli(tmp_path, "-c", "config.yaml")
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr


def test_generate_writes_registration_and_stores_tokens_in_the_config(tmp_path: Path) -> None:
    write(tmp_path, "# my comment stays\nhomeserver:\n    domain: example.org\n")
    result = run_cli(tmp_path, "-c", "config.yaml", "-r", "registration.yaml", "-g")
    assert result.returncode == 0, result.stderr
    assert "app_service_config_files" in result.stderr
    reg = YAML(typ="safe").load((tmp_path / "registration.yaml").read_text())
    cfg = Config.load(tmp_path / "config.yaml", environ={})
    assert reg["as_token"] == cfg["appservice.as_token"] != "generate"
    assert reg["hs_token"] == cfg["appservice.hs_token"] != reg["as_token"]
    assert reg["sender_localpart"] == "telebridgebot"
    assert reg["rate_limited"] is False
    assert reg["protocols"] == ["m.protocol.pstn", "im.vector.protocol.pstn"]
    assert reg["namespaces"]["users"][0] == {"regex": "@_sip_.+:example\\.org", "exclusive": True}
    assert "# my comment stays" in (tmp_path / "config.yaml").read_text()
    assert reg["hs_token"] not in result.stderr and reg["as_token"] not in result.stderr


def test_registration_that_does_not_match_the_config_is_refused(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "-c", "config.yaml", "-r", "registration.yaml", "-g").returncode == 0
    (tmp_path / "registration.yaml").write_text("as_token: x\nhs_token: y\n")
    result = run_cli(tmp_path, "-c", "config.yaml", "-r", "registration.yaml")
    assert result.returncode == 2
    assert "does not match" in result.stderr


def test_port_already_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "TELEBRIDGE_APPSERVICE__PORT": str(port),
            "TELEBRIDGE_HOMESERVER__ADDRESS": "http://127.0.0.1:1",
            "TELEBRIDGE_METRICS__ENABLED": "false",
        }
        result = run_cli(tmp_path, "-c", "config.yaml", "-r", "registration.yaml", env=env)
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_homeserver_is_reported_at_once_in_one_line_per_attempt(tmp_path: Path) -> None:
    bridge = BridgeProcess(
        tmp_path, database=f"sqlite:{tmp_path / 'bridge.db'}", homeserver_url="http://127.0.0.1:1"
    )
    bridge.generate()
    bridge.start()
    try:
        wait_until(lambda: "Cannot reach the homeserver" in bridge.log_text(), timeout=10, what="the error")
    finally:
        bridge.stop()
    log = bridge.log_text()
    assert "Cannot reach the homeserver at http://127.0.0.1:1" in log
    assert "retrying" not in log, "no retry warnings from the HTTP client before our own line"


def test_media_workers_auto_is_one_per_core_this_process_may_use() -> None:
    import os

    from telebridge.calls import media_workers

    assert media_workers("auto") == len(os.sched_getaffinity(0))
    assert media_workers(0) == 0 and media_workers(3) == 3
    assert Config.load(None, environ={})["calls.media_workers"] == "auto"
    from_env = Config.load(None, environ={"TELEBRIDGE_CALLS__MEDIA_WORKERS": "2"})["calls.media_workers"]
    assert media_workers(from_env) == 2
