"""No Docker engine runs here: validate the compose file with docker-compose and keep the Dockerfile honest."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.peers.matrix import REPO

DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()


def test_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian package) is not installed; CI installs it")
    result = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker" / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for service in ("postgres:", "synapse:", "telebridge:"):
        assert service in result.stdout
    assert "TELEBRIDGE_APPSERVICE__DATABASE: postgres://" in result.stdout


def test_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")


def test_image_ships_every_package_and_installs_like_the_readme() -> None:
    for package in ("telebridge", "sip", "smpp", "media", "sdp"):
        assert f"COPY {package} ./{package}" in DOCKERFILE
    readme = (REPO / "README.md").read_text()
    assert "pip install ." in readme
    assert "pip install --no-cache-dir ." in DOCKERFILE
