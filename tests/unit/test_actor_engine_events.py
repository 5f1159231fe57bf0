"""The unit actor with its main container's death from the agent's event hub, as an agent runs it, in virtual time.

No wait call is made for a main container: its end comes from the one ``/events`` subscription, and from an
inspection after an engine outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.fake_runtime import Behaviour, FakeRuntime
from fleetlet.exec.subprocess_runner import FakeProcessRunner
from fleetlet.service.actor import Start, Stop
from fleetlet.service.journal import MemoryJournal
from tests.actor_rig import Running, run_actor

pytestmark = pytest.mark.anyio

MACHINE_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f801"
NAME = "web.service"
UNIT = """\
[Unit]
Description=Web
After=docker.service

[Service]
Restart={restart}
RestartSec=1
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Agent:
    """The fakes, the hub, and one actor using it."""

    clock: ManualClock
    runtime: FakeRuntime
    events: EngineEvents
    actor: Running


@asynccontextmanager
async def agent(
    restart: str = "no",
    *,
    behaviour: Callable[[Mapping[str, Any]], Behaviour] = lambda body: Behaviour(),
    runtime: FakeRuntime | None = None,
    clock: ManualClock | None = None,
) -> AsyncIterator[Agent]:
    clock = clock or ManualClock()
    runtime = runtime or FakeRuntime(clock, behaviour=behaviour)
    events = EngineEvents(runtime, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(events.run)
        async with run_actor(
            UNIT.format(restart=restart),
            NAME,
            runtime=runtime,
            processes=FakeProcessRunner(clock=clock),
            clock=clock,
            journal=MemoryJournal(NAME, clock),
            machine_id=MACHINE_ID,
            events=events,
        ) as actor:
            yield Agent(clock, runtime, events, actor)
        tg.cancel_scope.cancel()


async def test_a_container_exiting_is_noticed_through_the_hub() -> None:
    async with agent() as a:
        started = await a.actor.ask(Start())
        assert started.describe() == "loaded active running"
        assert started.container_id is not None
        await a.clock.settle()
        assert a.events.watched == 1
        a.runtime.exit(started.container_id, 1)
        await a.clock.settle()
        status = await a.actor.status()
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")
        assert status.exit_status == "code=exited, status=1/FAILURE"
        assert f"{NAME}: Main process exited, code=exited, status=1/FAILURE" in a.actor.messages()
        assert a.runtime.called("wait") == []  # no connection held open per container
        assert len(a.runtime.called("watch_events")) == 1
        assert a.events.watched == 0


async def test_an_engine_restart_brings_a_restart_always_unit_back() -> None:
    async with agent("always") as a:
        first = await a.actor.ask(Start())
        a.runtime.restart_engine()  # the container dies of the daemon's SIGTERM; the event history goes with it
        await a.clock.settle()
        status = await a.actor.status()
        assert (status.active, status.sub) == ("activating", "auto-restart")
        assert status.exit_status == "code=exited, status=143/n/a"
        await a.clock.advance_to_next()
        again = await a.actor.status()
        assert again.describe() == "loaded active running"
        assert again.container_id not in (None, first.container_id)
        assert again.restarts == 1
        assert a.runtime.called("wait") == []
        assert len(a.runtime.called("watch_events")) == 2  # the first subscription, and the one after the restart
        await a.clock.settle()
        assert a.events.watched == 1  # the new container's


async def test_a_stop_is_seen_through_the_hub_and_leaves_no_watcher() -> None:
    async with agent(behaviour=lambda body: Behaviour(trap={"SIGTERM": 0})) as a:
        await a.actor.ask(Start())
        stopped = await a.actor.ask(Stop())
        assert (stopped.describe(), stopped.result) == ("loaded inactive dead", "success")
        assert a.runtime.called("wait") == []
        assert a.events.watched == 0


async def test_a_detached_actor_leaves_no_watcher_and_the_next_one_adopts_through_the_hub() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=lambda body: Behaviour())
    async with agent(runtime=runtime, clock=clock) as a:
        first = await a.actor.ask(Start())
        await a.actor.mailbox.aclose()  # detach: the container keeps running
        await clock.settle()
        assert a.events.watched == 0
    assert first.container_id is not None
    async with agent(runtime=runtime, clock=clock) as a:
        adopted = await a.actor.status()
        assert (adopted.describe(), adopted.container_id) == ("loaded active running", first.container_id)
        runtime.exit(first.container_id, 2)
        await clock.settle()
        assert (await a.actor.status()).exit_status == "code=exited, status=2/INVALIDARGUMENT"
        assert runtime.called("wait") == []
