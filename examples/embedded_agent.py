"""Run a whole fleetlet machine inside this program and start fleet's hello_world.service on it.

    set -a; . ./.services.env; set +a      # the engine `make services` started, if not the local one
    .venv/bin/python examples/embedded_agent.py [UNIT_FILE]

The agent keeps its registry, journals and API socket in a temporary directory and talks to the Docker engine of
``DOCKER_HOST`` (else the local socket). The program submits and starts the unit (by default
configs/units/hello_world.service, which asks for a machine with metadata group=hw_webservers) through the agent's
client, waits until it runs, prints its journal up to the first greeting, destroys it, and leaves the ``async with``
block, which shuts the agent down. Plain asyncio: the agent runs in any asyncio or anyio event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import fleetlet

HELLO_WORLD = Path(__file__).resolve().parents[1] / "configs" / "units" / "hello_world.service"
BOUND = 60.0  # seconds for the unit to start (its ExecStartPre pulls busybox) or to go


async def main(unit: fleetlet.CheckedUnit) -> None:
    name = unit.name.full
    # Short, under /tmp: a unix socket's path may not exceed 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="fleetlet-", dir="/tmp"))
    config = fleetlet.AgentConfig(state_dir, machine_id=uuid.uuid4().hex, metadata={"group": "hw_webservers"})
    try:
        async with fleetlet.Agent(config) as agent, agent.client() as fleet:
            print(f"agent {agent.machine_id[:8]} ready at {agent.endpoint}")
            await fleet.submit(name, unit.file)
            await fleet.start(name)
            async with asyncio.timeout(BOUND):
                report = await fleet.status(name)
                while (report.active_state, report.sub_state) != ("active", "running"):
                    if report.active_state == "failed":
                        raise SystemExit(f"{name} failed: {report.result}")
                    await asyncio.sleep(0.2)  # a poll: the event stream is still to come
                    report = await fleet.status(name)
                print(f"{name}: {report.load_state} {report.active_state} {report.sub_state}")
                async with contextlib.aclosing(fleet.journal(name, lines=20, follow=True)) as journal:
                    async for line in journal:
                        print(line)
                        if "Hello World" in line:
                            break
            await fleet.destroy(name)
            # Destroyed, the unit is stopped (its ExecStop) and unloaded; leaving earlier would leave it running.
            async with asyncio.timeout(BOUND):
                while True:
                    if all(state.name != name for state in await fleet.states()):
                        break
                    await asyncio.sleep(0.2)
            print(f"{name} destroyed")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print("agent stopped")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HELLO_WORLD
    try:
        asyncio.run(main(fleetlet.load_unit(path.read_text(), path.name)))
    except (OSError, fleetlet.FleetletError) as exc:  # no such file, an invalid unit, the agent could not start
        raise SystemExit(f"embedded_agent: {exc}") from None
