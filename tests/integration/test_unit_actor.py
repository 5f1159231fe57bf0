"""Unit actors on a real Docker engine: fleet's units run unchanged, with systemd's semantics.

Real time, real containers, real subprocesses. Every container a test's actor creates carries that test's machine
id, and the fixture removes them all afterwards, whatever happened.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fleetlet.clock import SystemClock
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, LABEL_UNIT, NoSuchContainer
from fleetlet.exec.subprocess_runner import SubprocessRunner
from fleetlet.service.actor import Start, Stop
from fleetlet.service.journal import FileJournal, JournalEntry
from tests.actor_rig import Running, run_actor

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HELLO_WORLD = (Path(__file__).resolve().parents[2] / "configs" / "units" / "hello_world.service").read_text()


@pytest.fixture
async def machine_id(docker: DockerRuntime) -> AsyncIterator[str]:
    """A machine id of the test's own; every container labelled with it is removed afterwards."""
    machine = uuid.uuid4().hex
    try:
        yield machine
    finally:
        with anyio.fail_after(60, shield=True):
            for state in await docker.list({LABEL_MACHINE: machine}):
                try:
                    await docker.remove(state.id, force=True, volumes=True)
                except NoSuchContainer:
                    pass


@pytest.fixture
def actor(docker: DockerRuntime, machine_id: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``async with actor(text, name) as running``: an actor over the real engine and real processes."""

    @asynccontextmanager
    async def start(text: str, name: str = "hello.service") -> AsyncIterator[Running]:
        clock = SystemClock()
        async with run_actor(
            text,
            name,
            runtime=docker,
            processes=SubprocessRunner(),
            clock=clock,
            journal=FileJournal(tmp_path / "journal", name, clock),
            machine_id=machine_id,
        ) as running:
            yield running

    return start


async def wait_for_line(running: Running, text: str, *, within: float) -> None:
    """Follow the unit's journal until a line holding ``text`` arrives."""
    send, receive = anyio.create_memory_object_stream[JournalEntry](1000)
    with send, receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: running.journal.follow(send, last=1000))
            with anyio.fail_after(within):
                async for entry in receive:
                    if text in entry.message:
                        break
            tg.cancel_scope.cancel()


async def test_fleets_hello_world_runs_unchanged(actor, docker: DockerRuntime, machine_id: str) -> None:  # type: ignore[no-untyped-def]
    async with actor(HELLO_WORLD, "hello_world.service") as running:
        status = await running.ask(Start(), within=60)
        assert status.describe() == "loaded active running"
        assert status.container_id is not None
        state = await docker.inspect("busybox1")
        assert state.running
        assert state.labels[LABEL_UNIT] == "hello_world.service"
        assert state.labels[LABEL_MACHINE] == machine_id
        await wait_for_line(running, "Hello World", within=10)
        # busybox's sh as PID 1 ignores SIGTERM, so `docker stop` waits its 10 s and kills: exit 137, which
        # systemd (and so fleetlet) counts as an unclean exit code. The stop still ends well inside TimeoutStopSec.
        with anyio.fail_after(30):
            stopped = await running.ask(Stop(), within=30)
        assert (stopped.describe(), stopped.result) == ("loaded failed failed", "exit-code")
        assert stopped.exit_status == "code=exited, status=137/n/a"
        with pytest.raises(NoSuchContainer):  # --rm
            await docker.inspect(status.container_id)
        messages = running.messages()
        assert "Starting HelloWorldApp..." in messages
        assert "Started HelloWorldApp." in messages
        assert "Stopping HelloWorldApp..." in messages


PRE_FAILS = """\
[Service]
ExecStartPre={dash}/usr/bin/docker run --rm busybox false
ExecStart=/usr/bin/docker run --rm --name {name} busybox sh -c "trap 'exit 0' TERM; while true; do sleep 1; done"
ExecStop=/bin/sh -c "echo stop >> {marks}"
ExecStopPost=/bin/sh -c "echo stop-post >> {marks}"
"""


@pytest.mark.parametrize(("dash", "expected"), [("", "loaded failed failed"), ("-", "loaded active running")])
async def test_a_failing_pre_command(actor, tmp_path: Path, dash: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    marks = tmp_path / "marks"
    name = f"pre-{uuid.uuid4().hex[:8]}"
    async with actor(PRE_FAILS.format(dash=dash, name=name, marks=marks)) as running:
        status = await running.ask(Start(), within=30)
        assert status.describe() == expected
        if dash:
            await running.ask(Stop(), within=30)
            assert marks.read_text().split() == ["stop", "stop-post"]
        else:
            assert status.result == "exit-code"
            assert marks.read_text().split() == ["stop-post"]  # ExecStop skipped, ExecStopPost ran


RESTARTS = """\
[Unit]
StartLimitIntervalSec=60
StartLimitBurst=3

[Service]
Restart=on-failure
RestartSec=1
ExecStart=/usr/bin/docker run --rm busybox sh -c "echo failing; exit 1"
"""


async def test_restart_on_failure_gives_up_at_the_start_limit(actor) -> None:  # type: ignore[no-untyped-def]
    async with actor(RESTARTS) as running:
        await running.ask(Start(), within=30)
        final = await running.until("failed", "failed", within=30)
        assert final.result == "start-limit-hit"
        assert final.restarts == 3
        assert running.messages().count("hello.service: Main process exited, code=exited, status=1/FAILURE") == 3
        assert running.messages().count("failing") == 3


STUBBORN = """\
[Service]
TimeoutStopSec=1
ExecStart=/usr/bin/docker run --rm --name {name} busybox sh -c "trap '' TERM; while true; do sleep 1; done"
"""


async def test_timeout_stop_sec_escalates_to_sigkill(actor, docker: DockerRuntime) -> None:  # type: ignore[no-untyped-def]
    name = f"stubborn-{uuid.uuid4().hex[:8]}"
    async with actor(STUBBORN.format(name=name)) as running:
        await running.ask(Start(), within=30)
        started = anyio.current_time()
        stopped = await running.ask(Stop(), within=30)
        took = anyio.current_time() - started
        assert (stopped.describe(), stopped.result) == ("loaded failed failed", "timeout")
        assert stopped.exit_status == "code=exited, status=137/n/a"
        assert 1.0 <= took < 10
        assert "hello.service: State 'stop-sigterm' timed out. Killing." in running.messages()


SLEEPER = """\
[Service]
ExecStart=/usr/bin/docker run --rm --name {name} busybox sh -c "trap 'exit 0' TERM; while true; do sleep 1; done"
"""


async def test_a_new_actor_adopts_the_running_container(actor, docker: DockerRuntime, machine_id: str) -> None:  # type: ignore[no-untyped-def]
    unit = SLEEPER.format(name=f"adopt-{uuid.uuid4().hex[:8]}")
    async with actor(unit) as first:
        started = await first.ask(Start(), within=30)
    assert (await docker.inspect(started.container_id or "")).running  # the actor detached, the container runs on
    async with actor(unit) as second:
        status = await second.status()
        assert status.describe() == "loaded active running"
        assert status.container_id == started.container_id
        assert len(await docker.list({LABEL_MACHINE: machine_id})) == 1
        stopped = await second.ask(Stop(), within=30)
        assert (stopped.describe(), stopped.result) == ("loaded inactive dead", "success")
