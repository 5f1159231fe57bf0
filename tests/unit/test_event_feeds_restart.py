"""A registry feed run again after it stopped (an agent on etcd follows the registry only while held): it publishes
exactly the net changes made while it was stopped, against what it had told the hub.

No sleeps: ``clock.settle()`` lets the watch and the feed run until both are blocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.events.hub import EventHub, Subscription
from fleetlet.events.local_feeds import PlacementFeed
from fleetlet.events.registry_feed import RegistryFeed
from fleetlet.registry import MemoryRegistry
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.model import ScheduleView
from tests.unit.test_event_feeds import A, B, ev, options, seen, unit

pytestmark = pytest.mark.anyio

NAMES = ("gone.service", "moving.service", "stopping.service", "changing.service", "unplacing.service")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(feed: RegistryFeed, hub: EventHub) -> AsyncIterator[Subscription]:
    """The feed run (again) from here, and a subscription to what it publishes from its start on."""
    sub = hub.subscribe()
    async with anyio.create_task_group() as tg:
        await tg.start(feed.run)
        yield sub
        tg.cancel_scope.cancel()


class FlakyRegistry(MemoryRegistry):
    """Cannot read the schedule while ``down``: a read of everything fails halfway, after the units."""

    down = False

    async def schedule(self) -> ScheduleView:
        if self.down:
            raise RegistryUnavailable("http://etcd", "connection refused")
        return await super().schedule()


async def changes_while_stopped(registry: MemoryRegistry) -> None:
    await registry.delete_unit("gone.service")
    await registry.set_machine("moving.service", B)
    await registry.set_desired_state("stopping.service", "inactive")
    await registry.clear_machine("stopping.service")
    await registry.put_unit("changing.service", unit("v2"), desired_state="launched")
    await registry.clear_machine("unplacing.service")
    await registry.put_unit("new.service", unit(), desired_state="launched")
    await registry.set_machine("new.service", A)
    await registry.put_unit("brief.service", unit())  # came and went while the feed was stopped: no news
    await registry.delete_unit("brief.service")


NET_CHANGES = [
    ev(
        "unit",
        "replaced",
        "changing.service",
        hash=unit("v2").hash,
        desiredState="launched",
        options=options("v2"),
        previousHash=unit().hash,
    ),
    ev("unit", "destroyed", "gone.service", hash=unit().hash, desiredState="launched"),
    ev("schedule", "unplaced", "gone.service", previousMachineID=A, reason="unit destroyed"),
    ev("schedule", "moved", "moving.service", machineID=B, previousMachineID=A),
    ev("unit", "submitted", "new.service", hash=unit().hash, desiredState="launched", options=options()),
    ev("schedule", "placed", "new.service", machineID=A),
    ev(
        "unit",
        "desired-state-changed",
        "stopping.service",
        hash=unit().hash,
        desiredState="inactive",
        previousDesiredState="launched",
        options=options(),
    ),
    ev("schedule", "unplaced", "stopping.service", previousMachineID=A, reason="desired state is inactive"),
    ev(
        "schedule", "unplaced", "unplacing.service", previousMachineID=A, reason="no machine can take it", reasons=["x"]
    ),
]


async def placed_units(registry: MemoryRegistry) -> None:
    for name in NAMES:
        await registry.put_unit(name, unit(), desired_state="launched")
        await registry.set_machine(name, A)


async def test_a_restarted_feed_publishes_the_net_changes_made_while_it_was_stopped() -> None:
    clock = ManualClock()
    registry, hub = MemoryRegistry(clock), EventHub(clock)
    await placed_units(registry)
    feed = RegistryFeed(registry, hub, reasons=lambda name: ("x",) if name == "unplacing.service" else ())
    async with running(feed, hub) as sub:
        assert await seen(clock, sub) == []  # the first run only remembers
    await changes_while_stopped(registry)
    async with running(feed, hub) as sub:
        assert await seen(clock, sub) == NET_CHANGES
        await registry.set_machine("unplacing.service", B)  # and it follows again from what it read
        assert await seen(clock, sub) == [ev("schedule", "placed", "unplacing.service", machineID=B)]
    assert [(e.topic, e.key) for e in hub.snapshot()] == [
        ("unit", "changing.service"),
        ("unit", "moving.service"),
        ("unit", "new.service"),
        ("unit", "stopping.service"),
        ("unit", "unplacing.service"),
        ("schedule", "changing.service"),
        ("schedule", "moving.service"),
        ("schedule", "new.service"),
        ("schedule", "unplacing.service"),
    ]


async def test_a_run_that_could_not_read_everything_leaves_what_the_hub_was_told() -> None:
    clock = ManualClock()
    registry, hub = FlakyRegistry(clock), EventHub(clock)
    await placed_units(registry)
    feed = RegistryFeed(registry, hub, reasons=lambda name: ("x",) if name == "unplacing.service" else ())
    async with running(feed, hub):
        pass
    await changes_while_stopped(registry)
    registry.down = True
    with pytest.raises(RegistryUnavailable):
        await feed.run()  # read the units, then failed on the schedule
    registry.down = False
    async with running(feed, hub) as sub:
        assert await seen(clock, sub) == NET_CHANGES  # no placement "lost" to the half-done read


async def test_a_stopped_feeds_placements_keep_the_placement_feed_to_one_unplaced_event() -> None:
    """The hub keeps the placements a stopped feed last told it. The engine, finding a unit it placed nowhere to
    go, leaves the ``unplaced`` to the registry feed, which tells it with the reasons when it runs again: one
    event, not the placement feed's and then the registry feed's."""
    clock = ManualClock()
    registry, hub = MemoryRegistry(clock), EventHub(clock)
    placement = PlacementFeed(hub)
    await registry.put_unit("db.service", unit(), desired_state="launched")
    await registry.set_machine("db.service", A)
    feed = RegistryFeed(registry, hub, reasons=placement.reasons)
    async with running(feed, hub):
        pass
    sub = hub.subscribe()
    why = ("machine aaaaaaaa: metadata role=db not in role=web",)
    placement.unplaceable({"db.service": why})  # the engine's pass, then its write
    await registry.clear_machine("db.service")
    assert await seen(clock, sub) == []
    async with running(feed, hub) as sub:
        assert await seen(clock, sub) == [
            ev(
                "schedule",
                "unplaced",
                "db.service",
                previousMachineID=A,
                reason="no machine can take it",
                reasons=list(why),
            )
        ]
    assert hub.latest("schedule", "db.service") is None
