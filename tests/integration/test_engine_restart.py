"""A Docker daemon restart while a unit runs is noticed and handled by ``Restart=``.

Without live-restore a daemon that goes away takes its containers with it. Stopped cleanly (SIGTERM), it stops them
first and answers the actor's wait call with their exit status, then goes. Killed (a crash), it cuts the wait call
off; the containers live on until the next daemon stops them; the actor waits for the engine to answer again and
asks it what became of the container. Either way the unit restarts as ``Restart=always`` asks: a new container,
running, within seconds of the engine's return. The start waits for the engine (``After=docker.service``, as fleet's
units say) rather than failing against a dead socket. The same holds when the container's death comes from the
agent's event subscription (:class:`~fleetlet.exec.engine_events.EngineEvents`) instead of a wait call: the dying
daemon sends its ``die`` down the stream, or the subscription comes back and the container is inspected.

The unit removes a leftover of its container before it starts, as fleet's units do. It needs to here: fleetlet
carries out ``--rm`` itself (it reads the exit status first), and when the dying daemon stops the container and goes
before fleetlet's removal reaches it, the stopped container keeps its name, and without the ``docker rm -f`` every
restart would fail on the name conflict until the start limit.

Each test restarts an engine of its own (:func:`~tests.integration.conftest.private_dockerd`), never the shared one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from fleetlet.clock import Clock, SystemClock
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.runtime import LABEL_MACHINE
from fleetlet.exec.subprocess_runner import SubprocessRunner
from fleetlet.service.actor import Start
from fleetlet.service.journal import FileJournal
from fleetlet.service.states import UnitStatus
from tests.actor_rig import Running, run_actor
from tests.integration.conftest import PrivateDockerd

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NAME = "survivor.service"
SURVIVOR = """\
[Unit]
After=docker.service

[Service]
Restart=always
RestartSec=1
ExecStartPre=-/usr/bin/docker rm -f {name}
ExecStart=/usr/bin/docker run --rm --name {name} busybox sh -c "trap 'exit 0' TERM; while true; do sleep 1; done"
"""


async def until_new_container(running: Running, old: str, *, within: float) -> UnitStatus:
    """Wait (real time) until the unit is ``active running`` again in a container other than ``old``."""
    with anyio.move_on_after(within):
        while True:
            changed = running.log.changed
            current = await running.status()
            if (current.active, current.sub) == ("active", "running") and current.container_id not in (None, old):
                return current
            await changed.wait()
    # Not pytest.fail: a BaseException through the actor's task groups would take anyio's test runner down with it.
    raise AssertionError(
        f"not running again in a new container within {within} s: {running.states()}\n{running.messages()}"
    )


@asynccontextmanager
async def event_hub(engine: DockerRuntime, clock: Clock, *, enabled: bool) -> AsyncIterator[EngineEvents | None]:
    """A running EngineEvents on ``engine`` when ``enabled``; else None, and the actor holds a wait call open."""
    if not enabled:
        yield None
        return
    events = EngineEvents(engine, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(events.run)
        yield events
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("hub", [pytest.param(False, id="wait-call"), pytest.param(True, id="event-hub")])
@pytest.mark.parametrize("crash", [pytest.param(False, id="stopped"), pytest.param(True, id="crashed")])
async def test_a_daemon_restart_is_survived_through_restart_always(
    private_dockerd: PrivateDockerd, tmp_path: Path, crash: bool, hub: bool
) -> None:
    machine_id = uuid.uuid4().hex
    clock = SystemClock()
    async with (
        DockerRuntime(private_dockerd.url) as engine,
        event_hub(engine, clock, enabled=hub) as events,
        run_actor(
            SURVIVOR.format(name=f"survivor-{machine_id[:8]}"),
            NAME,
            runtime=engine,
            processes=SubprocessRunner(),
            clock=clock,
            journal=FileJournal(tmp_path / "journal", NAME, clock),
            machine_id=machine_id,
            events=events,
        ) as running,
    ):
        first = await running.ask(Start(), within=30)
        assert first.describe() == "loaded active running"
        assert first.container_id is not None
        assert (await engine.inspect(first.container_id)).running

        await private_dockerd.stop(crash=crash)
        daemon_gone = time.time()  # wall time, as the journal's
        await private_dockerd.start()
        engine_back = anyio.current_time()
        again = await until_new_container(running, first.container_id, within=20)
        recovered = anyio.current_time()

        assert again.container_id is not None
        # The container's trap exits 0 on the SIGTERM that stops it: from the dying daemon, or from the next one.
        assert (again.restarts, again.exit_status) == (1, "code=exited, status=0/SUCCESS")
        exited = [e for e in running.journal.tail(1000) if e.message.startswith(f"{NAME}: Main process exited")]
        assert len(exited) == 1
        if crash:  # nothing could tell of the death until the next daemon: the actor waited for it, then asked
            assert exited[0].time > daemon_gone
        else:  # the dying daemon told of it itself: on the wait call, or down the event stream
            assert exited[0].time < daemon_gone
        assert (await engine.inspect(again.container_id)).running
        # The old container is gone (fleetlet's --rm, or the unit's docker rm -f): only the new one is left.
        assert [state.id for state in await engine.list({LABEL_MACHINE: machine_id})] == [again.container_id]
        after_start = running.states()[running.states().index("active/running") + 1 :]
        assert after_start[after_start.index("activating/auto-restart") :] == [
            "activating/auto-restart",
            "activating/start-pre",
            "activating/start",
            "active/running",
        ]  # no ExecStartPost= in the unit, so no start-post state, as with systemd
        assert f"{NAME}: Scheduled restart job, restart counter is at 1." in running.messages()
        # The engine backoff tops out at a few seconds, then RestartSec=1: the unit is back soon after the engine.
        assert recovered - engine_back < 10
