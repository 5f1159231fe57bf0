"""`fleetlet agent` as a separate process on a real engine, driven by the CLI as a user types it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from fleetlet.client import Client, Event
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
    started = agents.fleetlet("start", unit.name)  # blocks until the unit runs, as fleetctl's start did
    assert started.stdout == f"Unit {unit.name} launched on {agents.machine_id[:8]}.../{PUBLIC_IP}\n"
    running = _running(agents, container)
    assert running is not None
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

    # status and journal come through the API from the machine that runs the unit
    status = agents.fleetlet("status", unit.name).stdout
    assert f"● {unit.name} - agent e2e\n" in status
    assert "   Active: active (running) since " in status
    assert f"Container: {running.id[:12]}\n" in status
    assert f"  Machine: {agents.machine_id[:8]}.../{PUBLIC_IP}\n" in status
    until(lambda: agents.fleetlet("journal", "--lines", "2", unit.name).stdout.endswith(f"{unit.name}[stdout]: hi\n"))

    agents.fleetlet("restart", unit.name)
    restarted = _running(agents, container)
    assert restarted is not None
    assert restarted.id != running.id

    assert agents.fleetlet("stop", unit.name).stdout == (
        f"Unit {unit.name} loaded on {agents.machine_id[:8]}.../{PUBLIC_IP}\n"
    )
    assert _running(agents, container) is None

    assert agents.fleetlet("destroy", unit.name).stdout == f"Destroyed {unit.name}\n"
    assert agents.fleetlet("status", unit.name, check=False).stderr == f"Unit {unit.name} does not exist.\n"
    assert "start:" in agents.log.read_text()


def test_a_global_unit_follows_the_machines_metadata_patched_through_the_api(agents: Agents, tmp_path: Path) -> None:
    agents.start()
    container = f"fg-{agents.machine_id[:12]}"
    unit = tmp_path / "edge.service"
    unit.write_text(
        "[Service]\n"
        f"ExecStart=/usr/bin/docker run --rm --name {container} busybox "
        "sh -c \"trap 'exit 0' TERM; sleep 1000 & wait\"\n"
        "\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=edge\n"
    )
    assert (
        agents.fleetlet("start", str(unit)).stdout
        == f"Unit {unit.name} inactive\nTriggered global unit {unit.name} start\n"
    )

    async def set_metadata(metadata: dict[str, str]) -> None:
        async with Client(agents.endpoint) as fleet:
            await fleet.set_metadata(agents.machine_id, metadata)

    # Nothing runs it: the metadata does not match. A unit placed after it shows the agent has reconciled since.
    witness = _unit_file(tmp_path, f"fw-{agents.machine_id[:12]}")
    agents.fleetlet("start", str(witness))
    assert _running(agents, container) is None

    anyio.run(set_metadata, {"group": "hw_webservers", "role": "edge"})
    until(lambda: _running(agents, container))
    assert _cells(agents, "list-machines", "--full") == [
        [agents.machine_id, PUBLIC_IP, "group=hw_webservers,role=edge"]
    ]

    anyio.run(set_metadata, {"group": "hw_webservers"})
    until(lambda: _running(agents, container) is None)


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


def test_the_event_stream_follows_a_unit_across_an_agent_restart(agents: Agents, tmp_path: Path) -> None:
    """A client watching with ``Client.events()`` sees a unit start, keeps watching while the agent restarts (a
    new snapshot, since the new agent's stream begins anew), and sees the unit stop."""
    first = agents.start()
    container = f"fv-{agents.machine_id[:12]}"
    unit = _unit_file(tmp_path, container)
    state_key = f"{unit.name}@{agents.machine_id}"
    seen: list[Event] = []
    arrived = [anyio.Event()]  # set when an event arrives, then replaced

    async def until_seen(condition: Callable[[Event], bool]) -> None:
        with anyio.fail_after(BOUND):
            while not any(condition(e) for e in seen):
                await arrived[-1].wait()

    async def scenario() -> None:
        async with Client(agents.endpoint) as fleet, anyio.create_task_group() as tg:

            async def watch() -> None:
                async with contextlib.aclosing(fleet.events()) as events:
                    async for event in events:
                        seen.append(event)
                        arrived.append(anyio.Event())
                        arrived[-2].set()

            tg.start_soon(watch)
            await until_seen(lambda e: e.topic == "machine" and e.snapshot)
            await anyio.to_thread.run_sync(lambda: agents.fleetlet("start", str(unit)))
            await until_seen(lambda e: e.key == state_key and e.payload.get("sub") == "running")

            mark = len(seen)
            first.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(lambda: first.wait(BOUND))
            await anyio.to_thread.run_sync(agents.start)
            await until_seen(lambda e: e in seen[mark:] and e.snapshot and e.key == state_key)

            await anyio.to_thread.run_sync(lambda: agents.fleetlet("stop", unit.name))
            await until_seen(lambda e: e.key == state_key and not e.snapshot and e.payload.get("sub") == "dead")
            tg.cancel_scope.cancel()

    anyio.run(scenario)
    live = [(e.topic, e.type, e.payload.get("sub", "")) for e in seen if not e.snapshot and e.topic != "leader"]
    assert ("unit", "submitted", "") in live
    assert ("schedule", "placed", "") in live
    assert ("state", "changed", "running") in live
    assert ("unit", "desired-state-changed", "") in live
    indexes = [e.index for e in seen if not e.snapshot]
    assert indexes == sorted(indexes)
    assert len(indexes) == len(set(indexes))  # nothing twice
    restarted = [e for e in seen if e.snapshot and e.key == state_key]
    assert restarted[-1].payload["sub"] == "running"  # the adopted container, as the new agent reports it
