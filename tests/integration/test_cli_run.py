"""`fleetlet run`: one unit in the foreground on a real engine, its journal on stdout, Ctrl-C stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLEETLET = Path(sys.executable).parent / "fleetlet"


@pytest.fixture
def no_leftover(docker_url: str) -> Iterator[None]:
    """Whatever happens, the container the unit names is gone afterwards."""
    yield
    subprocess.run(
        ["docker", "rm", "-f", "hello_world-7"],
        env={**os.environ, "DOCKER_HOST": docker_url},
        capture_output=True,
        check=False,
    )


@pytest.mark.usefixtures("no_leftover")
def test_run_a_template_instance_until_interrupted(docker_url: str, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            FLEETLET,
            "run",
            ROOT / "configs/units/hello_world@.service",
            "--name",
            "hello_world@7.service",
            "--state-dir",
            tmp_path,
        ],
        env={**os.environ, "DOCKER_HOST": docker_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # ends when the process does: a hang fails on pytest's timeout
            lines.append(line)
            if "Hello World from hello_world@7.service" in line:
                break
        assert any("fleetlet: Started HelloWorldApp instance 7." in line for line in lines), lines
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "fleetlet: Stopped HelloWorldApp instance 7." in out
    assert err.strip().splitlines()[-1] == "fleetlet run: hello_world@7.service: loaded inactive dead (result: success)"
    assert (tmp_path / "journal").is_dir()


def test_run_refuses_a_template_without_an_instance(tmp_path: Path) -> None:
    result = subprocess.run(
        [FLEETLET, "run", ROOT / "configs/units/hello_world@.service"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr == (
        "fleetlet run: hello_world@.service is a template; run an instance: --name hello_world@1.service\n"
    )
