"""`fleetlet agent` configured by a TOML file and FLEETLET_* variables; SIGHUP reloads the file's metadata."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.agent_rig import BOUND, FLEETLET, Agents, free_port, until

pytestmark = pytest.mark.integration

ENV_IP = "192.0.2.9"  # TEST-NET-1: shown, never dialled


def _machines(agents: Agents) -> list[list[str]]:
    out = agents.fleetlet("list-machines", "--full", "--no-legend").stdout
    return [[cell for cell in line.split("\t") if cell] for line in out.splitlines()]


def _ready(agents: Agents) -> None:
    """Wait for the agent's signal handlers: its API answers a little before they are in place."""
    until(lambda: " ready: " in agents.log.read_text())


def test_the_files_metadata_is_reloaded_on_sighup(agents: Agents, tmp_path: Path) -> None:
    config = tmp_path / "fleetlet.toml"
    config.write_text('registry = "sqlite:fleet.sqlite"\npurge = false\n\n[metadata]\ngroup = "hw_webservers"\n')
    agent = agents.start(
        flags={"--config": str(config), "--metadata": None, "--public-ip": None}, env={"FLEETLET_PUBLIC_IP": ENV_IP}
    )
    _ready(agents)
    assert _machines(agents) == [[agents.machine_id, ENV_IP, "group=hw_webservers"]]
    assert (agents.state_dir / "fleet.sqlite").exists()
    assert not (agents.state_dir / "registry.sqlite").exists()

    config.write_text('registry = "sqlite:fleet.sqlite"\n\n[metadata]\ngroup = "hw_databases"\nregion = "lab"\n')
    agent.send_signal(signal.SIGHUP)
    until(lambda: _machines(agents) == [[agents.machine_id, ENV_IP, "group=hw_databases,region=lab"]])

    # A file broken meanwhile is reported with its line, and the metadata stays.
    config.write_text('[metadata]\ngroup = "hw_webservers\n')
    agent.send_signal(signal.SIGHUP)
    until(lambda: f"not reloading the metadata: {config}: line 2, column 23:" in agents.log.read_text())
    assert _machines(agents) == [[agents.machine_id, ENV_IP, "group=hw_databases,region=lab"]]

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=BOUND) == 0, agents.log.read_text()


def test_metadata_given_as_a_flag_is_pinned(agents: Agents, tmp_path: Path) -> None:
    config = tmp_path / "fleetlet.toml"
    config.write_text('[metadata]\ngroup = "from_file"\n')
    agent = agents.start(flags={"--config": str(config), "--metadata": "group=from_flag"})
    _ready(agents)
    assert _machines(agents)[0][2] == "group=from_flag"

    config.write_text('[metadata]\ngroup = "changed"\n')
    agent.send_signal(signal.SIGHUP)
    until(lambda: "the metadata is pinned by --metadata, given at start" in agents.log.read_text())
    assert _machines(agents)[0][2] == "group=from_flag"
    assert agent.poll() is None


def test_a_bad_config_file_is_one_line_naming_the_file_and_line(agents: Agents, tmp_path: Path) -> None:
    config = tmp_path / "fleetlet.toml"
    config.write_text('listen = "127.0.0.1:49153"\npurge = maybe\n')
    argv = [str(FLEETLET), "agent", "--state-dir", str(agents.state_dir), "--listen", f"127.0.0.1:{free_port()}"]
    # subprocess.run kills the agent should it start after all and outlive the bound.
    result = subprocess.run(
        [*argv, "--machine-id", agents.machine_id],
        env={**os.environ, "DOCKER_HOST": agents.docker_url, "FLEETLET_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"fleetlet agent: {config}: line 2, column 9: Invalid value\n"
