"""The registry feed over a MemoryRegistry and a real hub: units and placements, one event per happening.

No sleeps: ``clock.settle()`` lets the watch and the feed run until both are blocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import ManualClock
from fleetlet.events.hub import EventHub, Subscription
from fleetlet.events.registry_diff import UnitView, unit_changes, unit_payload
from fleetlet.events.registry_feed import RegistryFeed
from fleetlet.registry import Change, MemoryRegistry, RevisionCompacted, ScheduleEntry, UnitRecord
from fleetlet.registry.model import LeaderRecord
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

pytestmark = pytest.mark.anyio

A, B = ("a" * 32, "b" * 32)
Seen = tuple[str, str, str, dict[str, Any]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub(clock: ManualClock) -> EventHub:
    return EventHub(clock)


def unit(description: str = "test") -> UnitFile:
    return parse(f"[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sleep 1\n")


def options(description: str = "test") -> list[dict[str, str]]:
    return [
        {"section": "Unit", "name": "Description", "value": description},
        {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1"},
    ]


class ReversedRegistry(MemoryRegistry):
    """Reports the keys of a write in the other order (the put of a move first, the placement before the unit)."""

    def _commit(self, *changes: tuple[str, UnitRecord | ScheduleEntry | LeaderRecord | None]) -> int:
        return super()._commit(*reversed(changes))


@pytest.fixture(params=[MemoryRegistry, ReversedRegistry], ids=["delete-first", "put-first"])
def registry(request: pytest.FixtureRequest, clock: ManualClock) -> MemoryRegistry:
    registry: MemoryRegistry = request.param(clock)
    return registry


@asynccontextmanager
async def feeding(registry: MemoryRegistry, hub: EventHub, **kwargs: Any) -> AsyncIterator[Subscription]:
    """A running feed, and a subscription to what it publishes from then on."""
    feed = RegistryFeed(registry, hub, **kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(feed.run)
        yield hub.subscribe()
        tg.cancel_scope.cancel()


def ev(topic: str, type_: str, name: str, **payload: Any) -> Seen:
    """An event as ``seen`` reports it; every payload names its unit."""
    return (topic, type_, name, {"name": name, **payload})


async def seen(clock: ManualClock, sub: Subscription) -> list[Seen]:
    await clock.settle()
    return [(e.topic, e.type, e.key, dict(e.payload)) for e in sub.poll(1000)]


async def test_what_exists_at_start_is_in_the_snapshot_but_is_no_event(
    registry: MemoryRegistry, hub: EventHub, clock: ManualClock
) -> None:
    await registry.put_unit("hello.service", unit(), desired_state="launched")
    await registry.set_machine("hello.service", A)
    await registry.put_unit("idle.service", unit("idle"))
    before = hub.last_index
    async with feeding(registry, hub) as sub:
        assert await seen(clock, sub) == []
        assert hub.last_index == before
        snapshot = [(e.topic, e.type, e.key, dict(e.payload), e.snapshot) for e in hub.snapshot()]
    hello = {"name": "hello.service", "hash": unit().hash, "desiredState": "launched", "options": options()}
    idle = {"name": "idle.service", "hash": unit("idle").hash, "desiredState": "inactive", "options": options("idle")}
    assert snapshot == [
        ("unit", "submitted", "hello.service", hello, True),
        ("unit", "submitted", "idle.service", idle, True),
        ("schedule", "placed", "hello.service", {"name": "hello.service", "machineID": A}, True),
    ]


async def test_submit_start_place_stop_destroy(registry: MemoryRegistry, hub: EventHub, clock: ManualClock) -> None:
    h = unit().hash
    async with feeding(registry, hub) as sub:
        await registry.put_unit("hello.service", unit())
        assert await seen(clock, sub) == [
            ev("unit", "submitted", "hello.service", hash=h, desiredState="inactive", options=options()),
        ]
        await registry.set_desired_state("hello.service", "launched")
        await registry.set_machine("hello.service", A)
        assert await seen(clock, sub) == [
            ev(
                "unit",
                "desired-state-changed",
                "hello.service",
                hash=h,
                desiredState="launched",
                previousDesiredState="inactive",
                options=options(),
            ),
            ev("schedule", "placed", "hello.service", machineID=A),
        ]
        await registry.set_desired_state("hello.service", "loaded")
        await registry.delete_unit("hello.service")
        assert await seen(clock, sub) == [
            ev(
                "unit",
                "desired-state-changed",
                "hello.service",
                hash=h,
                desiredState="loaded",
                previousDesiredState="launched",
                options=options(),
            ),
            ev("unit", "destroyed", "hello.service", hash=h, desiredState="loaded"),
            ev("schedule", "unplaced", "hello.service", previousMachineID=A, reason="unit destroyed"),
        ]
        assert hub.snapshot() == []


async def test_a_move_is_one_event_whichever_order_its_keys_come_in(
    registry: MemoryRegistry, hub: EventHub, clock: ManualClock
) -> None:
    await registry.put_unit("hello.service", unit(), desired_state="launched")
    await registry.set_machine("hello.service", A)
    async with feeding(registry, hub) as sub:
        await registry.set_machine("hello.service", B)
        assert await seen(clock, sub) == [
            ev("schedule", "moved", "hello.service", machineID=B, previousMachineID=A),
        ]
        await registry.set_machine("hello.service", B)  # placed again where it is: nothing happened
        assert await seen(clock, sub) == []
        latest = hub.latest("schedule", "hello.service")
        assert latest is not None
        assert latest.type == "moved"


async def test_a_lone_unplacement_is_published_at_once_with_why(
    registry: MemoryRegistry, hub: EventHub, clock: ManualClock
) -> None:
    for name in ("a.service", "b.service", "c.service"):
        await registry.put_unit(name, unit(), desired_state="launched")
        await registry.set_machine(name, A)
    reasons = {"b.service": ("machine aaaaaaaa: metadata role=db not in role=web",)}
    async with feeding(registry, hub, reasons=lambda name: reasons.get(name, ())) as sub:
        await registry.set_desired_state("a.service", "inactive")
        await registry.clear_machine("a.service")
        await registry.clear_machine("b.service")
        await registry.clear_machine("c.service")
        assert await seen(clock, sub) == [
            ev(
                "unit",
                "desired-state-changed",
                "a.service",
                hash=unit().hash,
                desiredState="inactive",
                previousDesiredState="launched",
                options=options(),
            ),
            ev("schedule", "unplaced", "a.service", previousMachineID=A, reason="desired state is inactive"),
            ev(
                "schedule",
                "unplaced",
                "b.service",
                previousMachineID=A,
                reason="no machine can take it",
                reasons=list(reasons["b.service"]),
            ),
            ev("schedule", "unplaced", "c.service", previousMachineID=A, reason="unplaced by the leader"),
        ]
        assert [e.key for e in hub.snapshot() if e.topic == "schedule"] == []


async def test_new_contents_are_replaced_and_the_same_contents_nothing(
    registry: MemoryRegistry, hub: EventHub, clock: ManualClock
) -> None:
    await registry.put_unit("hello.service", unit("v1"), desired_state="launched")
    async with feeding(registry, hub) as sub:
        await registry.put_unit("hello.service", unit("v1"), desired_state="launched")
        assert await seen(clock, sub) == []
        await registry.put_unit("hello.service", unit("v2"), desired_state="launched")
        await registry.put_unit("hello.service", unit("v3"), desired_state="loaded")
        assert await seen(clock, sub) == [
            ev(
                "unit",
                "replaced",
                "hello.service",
                hash=unit("v2").hash,
                desiredState="launched",
                options=options("v2"),
                previousHash=unit("v1").hash,
            ),
            ev(
                "unit",
                "replaced",
                "hello.service",
                hash=unit("v3").hash,
                desiredState="loaded",
                options=options("v3"),
                previousHash=unit("v2").hash,
                previousDesiredState="launched",
            ),
        ]
        latest = hub.latest("unit", "hello.service")
        assert latest is not None
        assert latest.payload["options"] == options("v3")


async def test_the_leader_record_is_not_the_registry_feeds_business(
    registry: MemoryRegistry, hub: EventHub, clock: ManualClock
) -> None:
    async with feeding(registry, hub) as sub:
        lease = await registry.campaign(A, 10.0)
        assert lease is not None
        await registry.resign(lease)
        assert await seen(clock, sub) == []


class FallingBehindRegistry(MemoryRegistry):
    """Its first watch stalls until ``fall_behind`` is set and then finds its history compacted."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.fall_behind = anyio.Event()
        self.watches = 0

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        self.watches += 1
        if self.watches == 1:
            async with sink:
                await self.fall_behind.wait()
                raise RevisionCompacted(from_revision, await self.revision())
        await super().watch(from_revision, sink, prefix=prefix)


async def test_a_watch_that_fell_behind_publishes_the_differences(hub: EventHub, clock: ManualClock) -> None:
    registry = FallingBehindRegistry(clock)
    for name in ("gone.service", "moving.service", "stopping.service", "changing.service"):
        await registry.put_unit(name, unit(), desired_state="launched")
        await registry.set_machine(name, A)
    async with feeding(registry, hub) as sub:
        await registry.delete_unit("gone.service")
        await registry.set_machine("moving.service", B)
        await registry.set_desired_state("stopping.service", "inactive")
        await registry.clear_machine("stopping.service")
        await registry.put_unit("changing.service", unit("v2"), desired_state="launched")
        await registry.put_unit("new.service", unit())
        await registry.put_unit("brief.service", unit())  # came and went while the feed was behind: no news
        await registry.delete_unit("brief.service")
        assert await seen(clock, sub) == []
        registry.fall_behind.set()
        assert await seen(clock, sub) == [
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
            ev("unit", "submitted", "new.service", hash=unit().hash, desiredState="inactive", options=options()),
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
        ]
        assert registry.watches == 2
        await registry.set_machine("new.service", A)  # and it follows again from what it read
        assert await seen(clock, sub) == [ev("schedule", "placed", "new.service", machineID=A)]


def record(text: str) -> UnitRecord:
    return UnitRecord("x.service", text, "0" * 40, "inactive", 1)


@pytest.mark.parametrize("text", ["not a unit file", "[Service]\nExecStart"])
def test_a_record_that_cannot_be_parsed_is_published_without_options(text: str) -> None:
    payload = unit_payload(record(text))
    assert payload == {"name": "x.service", "hash": "0" * 40, "desiredState": "inactive"}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (UnitView(), UnitView()),
        (UnitView(record("[Unit]\nA=b\n")), UnitView(record("[Unit]\nA=b\n"))),
        (
            UnitView(placement=ScheduleEntry("x.service", A, 1)),
            UnitView(placement=ScheduleEntry("x.service", A, 2)),
        ),
    ],
)
def test_nothing_changed_is_no_event(before: UnitView, after: UnitView) -> None:
    assert unit_changes("x.service", before, after) == []
