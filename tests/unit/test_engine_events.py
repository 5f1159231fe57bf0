"""EngineEvents on the in-memory engine, in virtual time: deaths from one subscription, kept through outages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.engine_events import ContainerDeath, EngineEvents
from fleetlet.exec.executor import ContainerMain
from fleetlet.exec.fake_runtime import FakeRuntime
from fleetlet.exec.runtime import EngineUnavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeRuntime:
    return FakeRuntime(clock)


@pytest.fixture
async def hub(fake: FakeRuntime, clock: ManualClock) -> AsyncIterator[EngineEvents]:
    """A running hub; stopped (cancelled) after the test, as the agent's task group stops it."""
    events = EngineEvents(fake, clock)
    async with anyio.create_task_group() as tg:
        await tg.start(events.run)
        await clock.settle()
        yield events
        tg.cancel_scope.cancel()


async def running(fake: FakeRuntime) -> str:
    container = await fake.create({"Image": "busybox", "Cmd": ["sleep", "1000"]})
    await fake.start(container)
    return container


def subscriptions(fake: FakeRuntime) -> int:
    return len(fake.called("watch_events"))


async def test_a_die_resolves_the_watcher_with_its_exit_code(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    assert (death.ended, hub.watched) == (False, 1)
    fake.exit(container, 3)
    await clock.settle()
    with anyio.fail_after(1):
        await death.wait()
    assert (death.exit_code, death.oom_killed) == (3, False)
    assert hub.watched == 0  # a death is final: its watchers are forgotten at once


async def test_an_oom_event_before_the_die_marks_the_death(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    fake.exit(container, 137, oom=True)  # the engine says oom, then die
    await clock.settle()
    assert (death.exit_code, death.oom_killed) == (137, True)


async def test_an_oom_event_after_the_die_still_marks_the_death(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    fake.exit(container, 137, oom=True, oom_reported_late=True)  # die, then oom: the state is asked
    await clock.settle()
    assert (death.exit_code, death.oom_killed) == (137, True)


async def test_a_sigkill_without_oom_is_not_an_oom_kill(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    fake.exit(container, 137)
    await clock.settle()
    assert (death.ended, death.exit_code, death.oom_killed) == (True, 137, False)


async def test_a_destroy_without_a_die_resolves_as_vanished(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await fake.create({"Image": "busybox"})  # never started: its removal says destroy, and no die
    death = hub.watch(container)
    await fake.remove(container)
    await clock.settle()
    assert (death.exit_code, death.oom_killed) == (137, False)


async def test_a_destroy_after_the_die_keeps_the_die_s_exit_code(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    fake.exit(container, 2)
    await fake.remove(container)
    await clock.settle()
    assert death.exit_code == 2


async def test_death_of_an_ended_container_resolves_at_once(fake: FakeRuntime, clock: ManualClock) -> None:
    hub = EngineEvents(fake, clock)  # not even running: the inspection answers
    exited, killed, gone = await running(fake), await running(fake), await running(fake)
    fake.exit(exited, 7)
    fake.exit(killed, 137, oom=True)
    await fake.remove(gone, force=True)
    deaths = [await hub.death_of(container) for container in (exited, killed, gone)]
    assert [(d.exit_code, d.oom_killed) for d in deaths] == [(7, False), (137, True), (137, False)]
    with anyio.fail_after(1):
        for death in deaths:
            await death.wait()
    assert hub.watched == 0


async def test_death_of_leaves_nothing_registered_when_the_engine_cannot_answer(
    fake: FakeRuntime, clock: ManualClock
) -> None:
    hub = EngineEvents(fake, clock)
    container = await running(fake)
    fake.unavailable = True
    with pytest.raises(EngineUnavailable):
        await hub.death_of(container)
    fake.unavailable = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await hub.death_of(container)  # cancelled in its inspection
    assert hub.watched == 0


async def test_closing_watchers_leaves_nothing_registered(fake: FakeRuntime, clock: ManualClock) -> None:
    hub = EngineEvents(fake, clock)
    one, two = await running(fake), await running(fake)
    watchers = [hub.watch(one), hub.watch(one), await hub.death_of(two)]
    assert hub.watched == 2
    watchers[0].close()
    assert hub.watched == 2  # one still has a watcher
    for watcher in watchers:
        watcher.close()
    watchers[0].close()  # closing twice is harmless
    assert hub.watched == 0


async def test_every_watcher_of_a_container_is_resolved(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    first, second = await hub.death_of(container), await hub.death_of(container)
    fake.exit(container, 4)
    await clock.settle()
    assert (first.exit_code, second.exit_code, hub.watched) == (4, 4, 0)


async def test_many_waiters_share_one_subscription_and_each_wakes_for_its_own_container(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    containers = [await running(fake) for _ in range(150)]  # more containers than the hub has bells
    woken: list[str] = []

    async def waiter(death: ContainerDeath) -> None:
        await death.wait()
        woken.append(death.container_id)

    async with anyio.create_task_group() as tg:
        for container in containers:
            tg.start_soon(waiter, await hub.death_of(container))
        await clock.settle()
        for code, container in enumerate(containers[::3], start=1):
            fake.exit(container, code)
        await clock.settle()
        assert sorted(woken) == sorted(containers[::3])
        assert subscriptions(fake) == 1
        for container in containers:
            if container not in woken:
                fake.exit(container, 0)
    assert sorted(woken) == sorted(containers)
    assert subscriptions(fake) == 1
    assert hub.watched == 0


async def test_a_death_during_a_disconnection_is_replayed(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    subscribed = clock.time()
    clock.advance(10)
    container = await running(fake)
    started = clock.time()
    death = await hub.death_of(container)
    fake.unavailable = True  # the stream breaks; the engine keeps its history
    await clock.settle()
    assert clock.next_deadline == 10.5  # the hub waits for the engine
    fake.unavailable = False
    fake.exit(container, 5)
    await fake.remove(container)  # gone: only the replayed die can tell its exit code
    await clock.advance_to_next()
    assert (death.exit_code, death.oom_killed) == (5, False)
    # From the hub's creation, then from the last event seen (the container's start).
    assert [call.options["since"] for call in fake.called("watch_events")] == [subscribed, started]


async def test_a_death_in_a_daemon_restart_is_found_by_inspection(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    containers = [await running(fake) for _ in range(20)]
    deaths = [await hub.death_of(container) for container in containers]
    fake.restart_engine()  # SIGTERM kills every container: 143; the new daemon has no history to replay
    await clock.settle()
    assert [d.exit_code for d in deaths] == [143] * 20
    assert subscriptions(fake) == 2  # one per connection, whatever the number of watchers
    assert hub.watched == 0


async def test_a_watcher_registered_while_the_engine_is_away_is_resolved_after_it_comes_back(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    fake.unavailable = True
    await clock.settle()
    death = hub.watch(container)  # nobody could inspect it now
    fake.unavailable = False
    fake.exit(container, 6)
    await clock.advance_to_next()
    assert death.exit_code == 6


async def test_the_hub_keeps_reconnecting_through_a_long_outage(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    death = await hub.death_of(container)
    fake.unavailable = True
    await clock.settle()
    for expected in (0.5, 1.5, 3.5, 7.5, 12.5):  # backing off to 5 s between pings
        assert await clock.advance_to_next() == expected
    fake.restart_engine()
    fake.unavailable = False
    await clock.advance_to_next()
    assert death.exit_code == 143
    assert subscriptions(fake) == 2


async def test_a_death_before_the_stream_first_connects_is_not_lost(fake: FakeRuntime, clock: ManualClock) -> None:
    hub = EngineEvents(fake, clock)
    container = await running(fake)
    death = await hub.death_of(container)
    clock.advance(1)
    fake.exit(container, 9)
    clock.advance(1)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)  # replays from the hub's creation, not from now
        await clock.settle()
        assert death.exit_code == 9
        tg.cancel_scope.cancel()


# --- ContainerMain: its end from the hub, or from the wait call without one -------------------------------------


@pytest.mark.parametrize("through_hub", [pytest.param(True, id="hub"), pytest.param(False, id="wait-call")])
async def test_a_main_container_tells_an_oom_kill(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents, through_hub: bool
) -> None:
    container = await running(fake)
    main = ContainerMain(fake, container, remove=False, clock=clock, events=hub if through_hub else None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(main.wait)
        await clock.settle()
        assert main.oom_killed is False
        fake.exit(container, 137, oom=True)
    assert (await main.wait()).code == 137
    assert main.oom_killed is True
    assert len(fake.called("wait")) == (0 if through_hub else 1)


async def test_a_main_container_s_wait_can_be_cancelled_and_called_again(
    fake: FakeRuntime, clock: ManualClock, hub: EngineEvents
) -> None:
    container = await running(fake)
    main = ContainerMain(fake, container, remove=False, clock=clock, events=hub)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(main.wait)
            await clock.settle()
            assert hub.watched == 1
            scope.cancel()
    assert hub.watched == 0  # a cancelled wait leaves no watcher behind
    fake.exit(container, 1)
    assert (await main.wait()).code == 1  # the next call inspects: it ended meanwhile
    assert main.oom_killed is False
