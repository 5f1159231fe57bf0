"""`fleetlet agent` as a separate process on a real engine, driven by the CLI as a user types it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fleetlet.exec.runtime import ContainerState
from tests.integration.agent_rig import BOUND, PUBLIC_IP, Agents, until

pytestmark = pytest.mark.integration


def _unit_file(directory: Path, container: str) -> Path:
    path = directory / f"{container}.service"
    path.write_text(
        "[Unit]\nDescription=agent e2e\n\n[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name {container} busybox "
        "sh -c \"trap 'exit 0' TERM; while true; do echo hi; sleep 1; done\"\n"
        f"ExecStop=/usr/bin/docker stop {container}\n"
    )
    return path


def _cells(agents: Agents, *command: str) -> list[list[str]]:
    """The rows of a list command without its legend, each split into its non-empty tab-separated cells."""
    out = agents.fleetlet(*command, "--no-legend").stdout
    return [[cell for cell in line.split("\t") if cell] for line in out.splitlines()]


def _running(agents: Agents, container: str) -> ContainerState | None:
    state = agents.inspect(container)
    return state if state is not None and state.running else None


def test_submit_start_stop_destroy(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    container = f"fa-{agents.machine_id[:12]}"
    unit = _unit_file(tmp_path, container)

    agents.fleetlet("submit", str(unit))
    agents.fleetlet("start", unit.name)
    until(lambda: _running(agents, container))
    assert agents.inspect(container) is not None
    until(
        lambda: (
            _cells(agents, "list-units", "-l") == [[unit.name, f"{agents.machine_id}/{PUBLIC_IP}", "active", "running"]]
        )
    )
    assert agents.fleetlet("list-units").stdout == (
        f"UNIT\t\t\tMACHINE\t\t\tACTIVE\tSUB\n{unit.name}\t{agents.machine_id[:8]}.../{PUBLIC_IP}\tactive\trunning\n"
    )
    assert _cells(agents, "list-machines", "--full") == [
        [agents.machine_id, PUBLIC_IP, "group=hw_webservers,region=lab"]
    ]

    agents.fleetlet("stop", unit.name)
    until(lambda: _running(agents, container) is None)

    agents.fleetlet("destroy", unit.name)
    assert "start:" in agents.log.read_text()


def test_sigterm_leaves_the_container_and_the_next_agent_adopts_it(agents: Agents, tmp_path: Path) -> None:
    first = agents.start()
    container = f"fa-{agents.machine_id[:12]}"
    unit = _unit_file(tmp_path, container)
    agents.fleetlet("start", str(unit))
    until(lambda: _running(agents, container))
    before = agents.inspect(container)
    assert before is not None

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=BOUND) == 0, agents.log.read_text()
    still = _running(agents, container)
    assert still is not None
    assert still.id == before.id

    mark = len(agents.log.read_text())
    agents.start()
    # The second agent plans load and start for the unit; its actor adopts the container while loading.
    until(lambda: f"start: {unit.name}" in agents.log.read_text()[mark:])
    after = _running(agents, container)
    assert after is not None
    assert after.id == before.id
    assert [c.id for c in agents.containers()] == [before.id]

    # And it controls it: a stop reaches the adopted container.
    agents.fleetlet("stop", unit.name)
    until(lambda: _running(agents, container) is None)
