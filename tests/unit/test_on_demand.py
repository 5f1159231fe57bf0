"""OnDemand: a task run only while held, and ``linger`` seconds after, on a ManualClock at exact virtual times."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskStatus

from fleetlet.clock import ManualClock
from fleetlet.events.on_demand import OnDemand
from fleetlet.registry.errors import RegistryError, RegistryUnavailable

pytestmark = pytest.mark.anyio

LINGER = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Task:
    """A startable task that logs when it starts and stops, and fails when told to."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.log: list[tuple[float, str]] = []
        self.fail_start = False
        self.fail_later = anyio.Event()

    async def __call__(self, *, task_status: TaskStatus[None]) -> None:
        await anyio.lowlevel.checkpoint()  # a real start reads the registry first
        if self.fail_start:
            self.log.append((self.clock.monotonic(), "failed to start"))
            raise RegistryUnavailable("http://etcd", "connection refused")
        self.log.append((self.clock.monotonic(), "started"))
        task_status.started()
        try:
            await self.fail_later.wait()
            self.log.append((self.clock.monotonic(), "failed"))
            self.fail_later = anyio.Event()
            raise RegistryUnavailable("http://etcd", "connection refused")
        finally:
            if self.log[-1][1] == "started":
                self.log.append((self.clock.monotonic(), "stopped"))


@asynccontextmanager
async def running(clock: ManualClock, task: Task) -> AsyncIterator[OnDemand]:
    on_demand = OnDemand(task, clock, name="the test task", linger=LINGER, failures=(RegistryError,))
    async with anyio.create_task_group() as tg:
        await tg.start(on_demand.run)
        yield on_demand
        tg.cancel_scope.cancel()


async def at(clock: ManualClock, when: float) -> None:
    await clock.settle()
    clock.advance(when - clock.monotonic())
    await clock.settle()


async def test_runs_while_held_and_lingers_after_the_last_holder() -> None:
    clock = ManualClock()
    task = Task(clock)
    async with running(clock, task) as on_demand:
        await at(clock, 10)
        assert task.log == []  # nobody held it: never started
        async with on_demand.held():
            assert task.log == [(10, "started")]  # the block runs once the task has started
            assert on_demand.running
            async with on_demand.held():  # a second holder: the same run
                await at(clock, 15)
            await at(clock, 20)
        await at(clock, 49.5)
        assert on_demand.running  # lingering: 30 s after the last holder left at 20
        await at(clock, 50)
        assert task.log == [(10, "started"), (50, "stopped")]
        assert not on_demand.running


async def test_a_holder_coming_while_it_lingers_keeps_it_running() -> None:
    clock = ManualClock()
    task = Task(clock)
    async with running(clock, task) as on_demand:
        async with on_demand.held():
            await at(clock, 5)
        await at(clock, 25)
        async with on_demand.held():  # within the linger: no new start, and the linger starts over after it
            await at(clock, 40)
        await at(clock, 69)
        assert task.log == [(0, "started")]
        await at(clock, 70)
        assert task.log == [(0, "started"), (70, "stopped")]


async def test_a_holder_after_it_stopped_starts_it_again() -> None:
    clock = ManualClock()
    task = Task(clock)
    async with running(clock, task) as on_demand:
        async with on_demand.held():
            pass
        await at(clock, 30)
        await at(clock, 100)
        async with on_demand.held():
            assert task.log == [(0, "started"), (30, "stopped"), (100, "started")]
        await at(clock, 130)
        assert task.log[-1] == (130, "stopped")


async def test_a_failed_start_does_not_end_the_host_and_the_next_holder_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    task = Task(clock)
    task.fail_start = True
    async with running(clock, task) as on_demand:
        with caplog.at_level(logging.WARNING, "fleetlet.events"):
            async with on_demand.held():  # goes on without the task
                assert not on_demand.running
                await at(clock, 5)
                assert task.log == [(0, "failed to start")]  # nothing retries on its own
        assert [r.getMessage() for r in caplog.records] == [
            "the test task could not start (the cluster's registry at http://etcd cannot be reached: connection "
            "refused); it starts again when next wanted"
        ]
        task.fail_start = False
        await at(clock, 10)
        async with on_demand.held():
            assert on_demand.running
        assert task.log == [(0, "failed to start"), (10, "started")]


async def test_a_failure_after_the_start_ends_the_run_not_the_host(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    task = Task(clock)
    async with running(clock, task) as on_demand:
        with caplog.at_level(logging.WARNING, "fleetlet.events"):
            async with on_demand.held():
                await at(clock, 5)
                task.fail_later.set()
                await at(clock, 6)
                assert not on_demand.running  # the holder stays, without the task: no retry until the next one
                assert task.log == [(0, "started"), (5, "failed")]
                async with on_demand.held():
                    assert on_demand.running
                    assert task.log == [(0, "started"), (5, "failed"), (6, "started")]
        assert "the test task stopped" in caplog.text


async def test_other_failures_end_the_host() -> None:
    clock = ManualClock()

    async def broken(*, task_status: TaskStatus[None]) -> None:
        raise ValueError("a bug")

    on_demand = OnDemand(broken, clock, name="broken", failures=(RegistryError,))

    async def host() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(on_demand.run)
            async with on_demand.held():
                pass

    with pytest.raises(ExceptionGroup) as caught:
        await host()
    assert caught.group_contains(ValueError)


async def test_holders_waiting_when_the_host_stops_are_let_go() -> None:
    clock = ManualClock()
    gate = anyio.Event()

    async def slow(*, task_status: TaskStatus[None]) -> None:
        await gate.wait()
        task_status.started()

    on_demand = OnDemand(slow, clock, name="slow")
    entered = []
    async with anyio.create_task_group() as outer:

        async def holder() -> None:
            async with on_demand.held():
                entered.append(clock.monotonic())

        async with anyio.create_task_group() as host:
            await host.start(on_demand.run)
            outer.start_soon(holder)
            await clock.settle()
            host.cancel_scope.cancel()
    assert entered == [0]


async def test_a_holder_coming_as_the_linger_ends_gets_a_new_run() -> None:
    clock = ManualClock()
    task = Task(clock)
    holding = anyio.Event()
    async with running(clock, task) as on_demand, anyio.create_task_group() as tg:
        async with on_demand.held():
            pass
        await clock.settle()

        async def holder() -> None:
            async with on_demand.held():
                holding.set()
                await anyio.sleep_forever()

        clock.advance(LINGER)  # the run stops the task in its next turn, the holder comes right after
        tg.start_soon(holder)
        await clock.settle()
        assert holding.is_set()
        assert on_demand.running  # not let in on the run being stopped
        assert task.log == [(0, "started"), (30, "stopped"), (30, "started")]
        tg.cancel_scope.cancel()
