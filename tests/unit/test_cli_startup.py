"""The command line starts without the agent: its modules (Docker client, scheduler, actors) load only to run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetlet.agent.setting_names import DEFAULT_LISTEN
from fleetlet.cli.main import main

# What `fleetlet agent` and `fleetlet run` need, and no other command does.
HEAVY = ("fleetlet.agent.agent", "fleetlet.agent.config", "fleetlet.agent.node", "fleetlet.service.actor", "aiodocker")


def test_building_the_command_line_imports_neither_the_agent_nor_docker() -> None:
    probe = (
        "import sys\n"
        "from fleetlet.cli.main import _parser\n"
        "_parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == ""


def test_the_agents_help_names_its_default_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_LISTEN})" in help_text
    assert "--state-dir DIR" in help_text
