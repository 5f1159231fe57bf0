"""``fleetlet.Agent``: a whole node inside the caller's event loop, on the real Docker engine.

Each test has a state directory and machine ID of its own, and fleet's hello_world.service with a container name of
its own; the ``machine`` fixture removes every container labelled with the machine, and that name, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleetlet import Agent, AgentConfig, AgentStartupError, Client, load_unit
from fleetlet.client import UnitReport
from fleetlet.clock import SystemClock
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, ContainerState, NoSuchContainer
from fleetlet.registry.etcd_settings import parse_etcd_url
from fleetlet.service.journal import journal_file_name
from fleetlet.units.syntax import parse
from tests.fleet_units import HELLO_WORLD
from tests.integration.etcd_rig import EtcdMember

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embedded_agent.py"
UNIT = "hello_world.service"
BOUND = 30.0  # seconds any one expected change may take (the unit's ExecStartPre pulls busybox)


@dataclass
class Machine:
    """One test's machine: where its agent keeps its state, its ID, and its own copy of hello_world."""

    docker: DockerRuntime
    state_dir: Path
    machine_id: str

    @property
    def container(self) -> str:
        return f"hw-{self.machine_id[:12]}"

    @property
    def unit_text(self) -> str:
        return HELLO_WORLD.replace("busybox1", self.container)

    def config(self, **changes: Any) -> AgentConfig:
        settings: dict[str, Any] = {
            "machine_id": self.machine_id,
            "docker_url": self.docker.url,
            "metadata": {"group": "hw_webservers"},
            **changes,
        }
        return AgentConfig(self.state_dir, **settings)

    async def container_state(self) -> ContainerState | None:
        try:
            return await self.docker.inspect(self.container)
        except NoSuchContainer:
            return None


@pytest.fixture
async def machine(docker: DockerRuntime) -> AsyncIterator[Machine]:
    # Short, under /tmp: a unix socket's path may not exceed 108 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="fe-", dir="/tmp"))
    machine = Machine(docker, state_dir, uuid.uuid4().hex)
    try:
        yield machine
    finally:
        with anyio.fail_after(60, shield=True):
            leftovers = [state.id for state in await docker.list({LABEL_MACHINE: machine.machine_id})]
            for container in [*leftovers, machine.container]:
                with contextlib.suppress(NoSuchContainer):
                    await docker.remove(container, force=True, volumes=True)
        shutil.rmtree(state_dir, ignore_errors=True)


async def start_hello_world(fleet: Client, machine: Machine, text: str = "") -> UnitReport:
    """Submit and start the machine's hello_world (or ``text``) through ``fleet``; its status once it runs."""
    await fleet.submit(UNIT, load_unit(text or machine.unit_text, UNIT).file)
    await fleet.start(UNIT)
    with anyio.fail_after(BOUND):
        while True:
            report = await fleet.status(UNIT)
            if (report.active_state, report.sub_state) == ("active", "running"):
                return report
            assert report.active_state != "failed", report
            await anyio.sleep(0.1)  # a poll: the API has no event stream yet


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_the_agent_runs_hello_world_in_the_tests_loop_and_leaves_it_running(machine: Machine) -> None:
    before = other_tasks()
    async with Agent(machine.config()) as agent:
        assert agent.address is None  # no host: the unix socket only
        assert agent.endpoint == f"unix://{machine.state_dir}/fleetlet.sock"
        async with agent.client() as fleet:
            report = await start_hello_world(fleet, machine)
            assert report.machine_id == machine.machine_id
            with anyio.fail_after(BOUND):
                async with contextlib.aclosing(fleet.journal(UNIT, lines=50, follow=True)) as journal:
                    async for line in journal:
                        if line.endswith(f"{UNIT}[stdout]: Hello World"):
                            break
        running = await machine.container_state()
        assert running is not None
        assert running.running
        assert report.container_id == running.id

    # Shut down cleanly: nothing left of the node, neither its tasks nor its socket ...
    assert other_tasks() == before
    assert not agent.socket_path.exists()
    # ... and, without purge, the unit's container runs on for the next agent to adopt.
    after = await machine.container_state()
    assert after is not None
    assert (after.id, after.running) == (running.id, True)


async def test_purge_stops_the_units_on_leaving(machine: Machine) -> None:
    async with Agent(machine.config(purge=True)) as agent, agent.client() as fleet:
        await start_hello_world(fleet, machine)
        assert await machine.container_state() is not None
    # Stopped by its ExecStop (busybox's shell ignores the SIGTERM: docker stop kills it); `docker run --rm` removed it.
    assert await machine.container_state() is None
    journal = (machine.state_dir / "journal" / journal_file_name(UNIT)).read_text()
    assert '"message":"Stopping HelloWorldApp..."' in journal


async def test_the_example_runs_under_plain_asyncio(machine: Machine) -> None:
    unit = machine.state_dir / UNIT
    unit.write_text(machine.unit_text)
    result = await anyio.run_process(
        [sys.executable, str(EXAMPLE), str(unit)],
        env={**os.environ, "DOCKER_HOST": machine.docker.url},
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr.decode())
    lines = out.splitlines()
    assert lines[0].startswith("agent ")
    assert " ready at unix:///tmp/" in lines[0]
    assert lines[1] == f"{UNIT}: loaded active running"
    assert any(line.endswith("fleetlet: Started HelloWorldApp.") for line in lines)
    assert lines[-3].endswith(f"{UNIT}[stdout]: Hello World")
    assert lines[-2:] == [f"{UNIT} destroyed", "agent stopped"]
    assert await machine.container_state() is None  # destroyed, not left behind
    state_dir = lines[0].rpartition("unix://")[2].removesuffix("/fleetlet.sock")
    assert not await anyio.Path(state_dir).exists()


async def test_a_tcp_port_of_the_systems_choosing_and_metadata_set_by_the_program(machine: Machine) -> None:
    async with Agent(machine.config(host="127.0.0.1", port=0, metadata={"group": "a"})) as agent:
        assert agent.address is not None
        host, port = agent.address
        assert (host, port != 0) == ("127.0.0.1", True)
        async with Client(f"http://127.0.0.1:{port}") as fleet:
            assert [(m.id, m.metadata) for m in await fleet.machines()] == [(machine.machine_id, {"group": "a"})]
            assert agent.set_metadata({"group": "b"})
            assert not agent.set_metadata({"group": "b"})
            assert [m.metadata for m in await fleet.machines()] == [{"group": "b"}]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # released


async def test_a_cancelled_block_shuts_the_agent_down(machine: Machine) -> None:
    before = other_tasks()
    with anyio.CancelScope() as scope:
        async with Agent(machine.config()) as agent:
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert other_tasks() == before
    assert not agent.socket_path.exists()


async def test_an_exception_of_the_block_propagates_as_it_is(machine: Machine) -> None:
    class Boom(Exception):
        pass

    before = other_tasks()
    with pytest.raises(Boom):
        async with Agent(machine.config()):
            raise Boom
    assert other_tasks() == before


def _port_in_use(machine: Machine, stack: contextlib.ExitStack) -> tuple[AgentConfig, str]:
    holder = stack.enter_context(socket.socket())
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    return machine.config(host="127.0.0.1", port=port), f"cannot listen on 127.0.0.1:{port}: "


def _state_dir_under_a_file(machine: Machine, stack: contextlib.ExitStack) -> tuple[AgentConfig, str]:
    blocker = machine.state_dir / "file"
    blocker.write_text("")  # root may write anywhere, but no one makes a directory inside a file
    return AgentConfig(blocker / "state", machine.machine_id), f"state directory {blocker}/state is not writable: "


def _no_engine(machine: Machine, stack: contextlib.ExitStack) -> tuple[AgentConfig, str]:
    # Fails last, after the API and the node's tasks have started: all of it must go again.
    url = f"unix://{machine.state_dir}/no-docker.sock"
    return machine.config(docker_url=url), f"cannot list the containers of the Docker engine at {url}: "


@pytest.mark.parametrize("failure", [_port_in_use, _state_dir_under_a_file, _no_engine], ids=lambda f: f.__name__)
async def test_a_startup_failure_raises_one_line_and_leaves_nothing_running(machine: Machine, failure: Any) -> None:
    before = other_tasks()
    with contextlib.ExitStack() as stack:
        config, reason = failure(machine, stack)
        agent = Agent(config)
        with pytest.raises(AgentStartupError) as raised:
            async with agent:
                pytest.fail("the agent started")
    message = str(raised.value)
    assert message.startswith(reason)
    assert "\n" not in message
    assert other_tasks() == before
    assert not agent.socket_path.exists()
    assert await machine.docker.list({LABEL_MACHINE: machine.machine_id}) == []


async def test_the_agents_event_hub_tells_a_units_whole_life(machine: Machine) -> None:
    # hello_world's shell ignores SIGTERM, so its stop ends in SIGKILL and `failed`: this one stops cleanly.
    clean = machine.unit_text.replace('/bin/sh -c "while', "/bin/sh -c \"trap 'exit 0' TERM; while")
    assert clean != machine.unit_text
    async with Agent(machine.config(purge=True)) as agent, agent.client() as fleet:
        sub = agent.events.subscribe()
        await start_hello_world(fleet, machine, clean)
        await fleet.destroy(UNIT)
        with anyio.fail_after(BOUND):
            seen: list[tuple[str, str, str]] = []
            while ("state", "removed") not in [(topic, kind) for topic, kind, _ in seen]:
                seen.extend((e.topic, e.type, e.payload.get("active", "")) for e in await sub.next_batch())
    life = [step for step in seen if step[0] != "state" or step[1] == "removed" or step[2] in ("active", "inactive")]
    assert life == [
        ("unit", "submitted", ""),
        ("unit", "desired-state-changed", ""),
        ("schedule", "placed", ""),
        ("state", "changed", "active"),
        ("unit", "destroyed", ""),
        ("schedule", "unplaced", ""),
        ("state", "changed", "inactive"),
        ("state", "removed", ""),
    ]


# --- on etcd: the registry feed runs while held ------------------------------------------------------------------

OTHER = "other-machine"
ELSEWHERE = "elsewhere.service"
TEXT = "[Unit]\nDescription=placed on another machine\n\n[Service]\nExecStart=/bin/true\n"


async def test_decisions_for_another_machine_reach_the_hub_only_while_the_feed_is_held(
    machine: Machine, member: EtcdMember
) -> None:
    """With no subscriber, a unit placed on another machine does not reach ``agent.events``; held, it does.

    The test holds the leadership for a machine that does not exist, so that the agent's engine, not leading,
    moves nothing: the unit stays placed on that other machine.
    """
    settings = parse_etcd_url(f"etcd://{member.url.removeprefix('http://')}")
    async with settings.registry(SystemClock()) as registry:
        lease = await registry.campaign(OTHER, 120.0)  # the agent's engine does not lead: nothing moves
        assert lease is not None
        config = machine.config(host="127.0.0.1", port=0, etcd=settings)
        async with Agent(config) as agent:
            hub = agent.events
            await registry.put_unit(ELSEWHERE, parse(TEXT), desired_state="launched")
            await registry.set_machine(ELSEWHERE, OTHER)
            async with agent.client() as fleet:
                # The agent's API reads etcd itself: the placement is written, and the hub has heard nothing of it.
                assert ELSEWHERE in {unit.name for unit in await fleet.units()}
                assert hub.latest("schedule", ELSEWHERE) is None
                assert hub.latest("unit", ELSEWHERE) is None

                sub = hub.subscribe()
                async with agent.registry_events():
                    placed = hub.latest("schedule", ELSEWHERE)
                    assert placed is not None
                    assert placed.payload["machineID"] == OTHER
                    # Held, the feed follows the registry: a move is an event.
                    await registry.set_machine(ELSEWHERE, "third-machine")
                    with anyio.fail_after(BOUND):
                        moved = [e for e in await sub.next_batch() if e.topic == "schedule"]
                    assert [(e.type, e.key, e.payload["machineID"]) for e in moved] == [
                        ("moved", ELSEWHERE, "third-machine")
                    ]

                # An event-stream connection holds it too; its snapshot is current.
                stream = fleet.events(topics=["schedule"])
                async with contextlib.aclosing(stream):
                    with anyio.fail_after(BOUND):
                        first = await anext(stream)
                assert (first.snapshot, first.type, first.key) == (True, "moved", ELSEWHERE)
                assert first.payload["machineID"] == "third-machine"
        await registry.resign(lease)
