"""Cancelling an actor at any await point leaves no orphan container.

A reference run counts the engine calls a start makes; then, for every call, a run is cancelled right there —
once before the engine acts on the call and once after (the engine did it, the answer never arrived). Afterwards
no container may be left created-but-never-started, no command container may still run, and at most the unit's
main container may run: that one is not an orphan, the next actor adopts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.fake_runtime import Behaviour, FakeRuntime
from fleetlet.exec.runtime import LABEL_ROLE
from fleetlet.exec.subprocess_runner import FakeBehaviour, FakeProcessRunner
from fleetlet.service.actor import Start, Stop
from fleetlet.service.journal import MemoryJournal
from tests.actor_rig import run_actor

pytestmark = pytest.mark.anyio

UNIT = """\
[Service]
ExecStartPre=-/usr/bin/docker rm -f web
ExecStartPre=/usr/bin/docker run --rm --name prepare busybox true
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
ExecStop=/usr/bin/docker stop web
ExecStopPost=/usr/bin/docker run --rm --name cleanup busybox true
"""

Moment = Literal["before", "after"]
_EFFECTFUL = ("create", "start", "remove", "stop", "kill")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def behaviour(body: Mapping[str, Any]) -> Behaviour:
    if body.get("Cmd") == ["true"]:
        return Behaviour(exit_code=0)
    return Behaviour(trap={"SIGTERM": 0})


class CancellingRuntime(FakeRuntime):
    """A fake engine that cancels ``scope`` at its ``cancel_at``-th call, before or after acting on it."""

    def __init__(self, clock: ManualClock, cancel_at: int | None, moment: Moment) -> None:
        super().__init__(clock, behaviour=behaviour)
        self.cancel_at = cancel_at
        self.moment = moment
        self.scope: anyio.CancelScope | None = None

    def _hit(self) -> bool:
        return self.cancel_at is not None and len(self.calls) == self.cancel_at

    async def _cancel_here(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        await anyio.lowlevel.checkpoint()

    async def _enter(self, method: str, *args: Any, **options: Any) -> int:
        epoch = await super()._enter(method, *args, **options)
        if self.moment == "before" and self._hit():
            await self._cancel_here()
        return epoch

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name not in _EFFECTFUL or super().__getattribute__("moment") != "after":
            return attribute

        async def acted_then_cancelled(*args: Any, **options: Any) -> Any:
            result = await attribute(*args, **options)
            if self._hit():
                await self._cancel_here()
            return result

        return acted_then_cancelled


async def lifecycle(runtime: CancellingRuntime, clock: ManualClock) -> None:
    """Start the unit, then stop it; cancelled wherever the runtime says."""
    processes = FakeProcessRunner(default=FakeBehaviour())
    with anyio.CancelScope() as scope:
        runtime.scope = scope
        async with run_actor(
            UNIT,
            "web.service",
            runtime=runtime,
            processes=processes,
            clock=clock,
            journal=MemoryJournal("web.service", clock),
            machine_id="m1",
        ) as running:
            await running.ask(Start())
            await running.ask(Stop())


def calls_in_a_full_run() -> int:
    async def count() -> int:
        clock = ManualClock()
        runtime = CancellingRuntime(clock, None, "before")
        await lifecycle(runtime, clock)
        return len(runtime.calls)

    return anyio.run(count)


CALLS = calls_in_a_full_run()


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("cancel_at", range(1, CALLS + 1))
async def test_no_orphan_container_whenever_the_actor_is_cancelled(cancel_at: int, moment: Moment) -> None:
    clock = ManualClock()
    runtime = CancellingRuntime(clock, cancel_at, moment)
    await lifecycle(runtime, clock)
    left = await runtime.list()
    never_started = [c.name for c in left if c.status == "created"]
    commands_running = [c.name for c in left if c.running and c.labels.get(LABEL_ROLE) != "main"]
    mains_running = [c.name for c in left if c.running and c.labels.get(LABEL_ROLE) == "main"]
    assert never_started == []
    assert commands_running == []
    assert len(mains_running) <= 1


def test_the_reference_run_makes_the_calls_it_should() -> None:
    assert CALLS >= 10  # rm, create/start/wait of prepare, create/start of web, stop, kill?, create/start of cleanup...
