"""The agent's own feeds (states, its machine) and the engine's (leadership, units no machine can take).

The engine runs over a MemoryRegistry and a ManualClock, as in test_engine_loop; no sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from fleetlet.agent.machine import LocalMachine
from fleetlet.clock import ManualClock
from fleetlet.engine import Engine, MachineSpec
from fleetlet.events.hub import EventHub, Subscription
from fleetlet.events.local_feeds import LeaderFeed, MachineFeed, PlacementFeed, StateFeed
from fleetlet.events.registry_feed import RegistryFeed
from fleetlet.registry import MemoryRegistry
from fleetlet.service.states import ActiveState, SubState, UnitStatus
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

pytestmark = pytest.mark.anyio

A = "a" * 32
KEY = f"hello.service@{A}"
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


def taken(sub: Subscription) -> list[Seen]:
    return [(e.topic, e.type, e.key, dict(e.payload)) for e in sub.poll(1000)]


def status(active: ActiveState, sub: SubState, *, hash: str = "h1", since: float = 0.0, **fields: Any) -> UnitStatus:
    return UnitStatus("hello.service", hash, active=active, sub=sub, since=since, **fields)


def state(active: str, sub: str, previous: tuple[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "hello.service",
        "machineID": A,
        "hash": "h1",
        "load": "loaded",
        "active": active,
        "sub": sub,
        "result": "success",
        "since": 0.0,
        "restarts": 0,
        **fields,
    }
    if previous is not None:
        payload["previous"] = {"load": "loaded", "active": previous[0], "sub": previous[1], "result": "success"}
    return payload


def test_a_state_is_an_event_only_when_it_changes(hub: EventHub) -> None:
    feed, sub = StateFeed(hub, A), hub.subscribe()
    feed.publish(status("activating", "start-pre"))
    feed.publish(status("activating", "start-pre"))  # a second ExecStartPre: the same state
    feed.publish(status("activating", "start-pre", since=5.0, restarts=1))  # only time and counters moved
    feed.publish(status("active", "running", container_id="c0ffee"))
    feed.publish(status("active", "running", hash="h2"))  # replaced in place: a new version is news
    assert taken(sub) == [
        ("state", "changed", KEY, state("activating", "start-pre")),
        ("state", "changed", KEY, state("active", "running", ("activating", "start-pre"), containerID="c0ffee")),
        ("state", "changed", KEY, state("active", "running", ("active", "running"), hash="h2")),
    ]


def test_a_unit_removed_from_the_machine_leaves_the_snapshot(hub: EventHub) -> None:
    feed, sub = StateFeed(hub, A), hub.subscribe()
    feed.removed("hello.service")  # never published a state here: nothing to say
    feed.publish(status("inactive", "dead"))
    assert [e.key for e in hub.snapshot()] == [KEY]
    feed.removed("hello.service")
    removed = {"name": "hello.service", "machineID": A, "previous": state("x", "x", ("inactive", "dead"))["previous"]}
    assert taken(sub) == [("state", "changed", KEY, state("inactive", "dead")), ("state", "removed", KEY, removed)]
    assert hub.snapshot() == []
    feed.publish(status("inactive", "dead"))  # loaded again: a first state, with nothing before it
    assert taken(sub) == [("state", "changed", KEY, state("inactive", "dead"))]


def test_the_machine_joins_and_its_metadata_changes(hub: EventHub) -> None:
    machine = LocalMachine(MachineSpec(A, {"role": "web"}, "10.0.0.5"))
    sub = hub.subscribe()
    MachineFeed(hub, machine).start()
    machine.set_metadata({"role": "web"})
    machine.set_metadata({"role": "db", "az": "1"})
    machine.set_metadata({})
    ip = {"id": A, "primaryIP": "10.0.0.5"}
    db = {"role": "db", "az": "1"}
    assert taken(sub) == [
        ("machine", "joined", A, {**ip, "metadata": {"role": "web"}}),
        ("machine", "metadata-changed", A, {**ip, "metadata": db, "previousMetadata": {"role": "web"}}),
        ("machine", "metadata-changed", A, {**ip, "previousMetadata": db}),
    ]
    assert [(e.type, e.key) for e in hub.snapshot()] == [("metadata-changed", A)]


def test_unplaceable_reasons_are_published_when_they_appear_or_change(hub: EventHub) -> None:
    feed, sub = PlacementFeed(hub), hub.subscribe()
    hub.publish("schedule", "placed", "placed.service", {"name": "placed.service", "machineID": A})
    sub.poll()
    feed.unplaceable({"web.service": ("machine aaaaaaaa: no",), "placed.service": ("machine aaaaaaaa: no",)})
    feed.unplaceable({"web.service": ("machine aaaaaaaa: no",)})
    feed.unplaceable({"web.service": ("machine aaaaaaaa: still no",)})
    feed.unplaceable({})
    assert taken(sub) == [
        no_machine("web.service", "machine aaaaaaaa: no"),
        no_machine("web.service", "machine aaaaaaaa: still no"),
    ]
    assert feed.reasons("web.service") == ()
    feed.unplaceable({"placed.service": ("machine aaaaaaaa: no",)})
    assert taken(sub) == []  # still placed: the registry's unplaced carries the reasons
    assert feed.reasons("placed.service") == ("machine aaaaaaaa: no",)


def unit(x_fleet: str) -> UnitFile:
    return parse(f"[Service]\nExecStart=/bin/sleep 1\n\n[X-Fleet]\n{x_fleet}\n")


def no_machine(name: str, *reasons: str, **fields: str) -> Seen:
    """The ``unplaced`` of a unit no machine can take."""
    payload = {"name": name, **fields, "reason": "no machine can take it", "reasons": list(reasons)}
    return ("schedule", "unplaced", name, payload)


@asynccontextmanager
async def cluster(
    registry: MemoryRegistry, hub: EventHub, here: LocalMachine, clock: ManualClock, **hooks: Any
) -> AsyncIterator[Engine]:
    """One machine's engine, and its registry feed with the engine's feeds wired as the agent wires them."""
    leader, placement = LeaderFeed(hub), PlacementFeed(hub)
    hooks.setdefault("on_leadership", leader.leadership)
    hooks.setdefault("on_unplaceable", placement.unplaceable)
    engine = Engine(registry, lambda: [here.spec], clock, machine_id=here.id, settle=0, **hooks)
    here.subscribe(engine.machines_changed)
    async with anyio.create_task_group() as tg:
        await tg.start(RegistryFeed(registry, hub, reasons=placement.reasons).run)
        await tg.start(engine.run)
        yield engine
        tg.cancel_scope.cancel()


async def test_the_engine_tells_of_its_term_and_of_new_reasons_only(hub: EventHub, clock: ManualClock) -> None:
    terms: list[tuple[str, int, bool]] = []
    told: list[Mapping[str, tuple[str, ...]]] = []
    here = LocalMachine(MachineSpec(A, {"role": "db"}))
    registry = MemoryRegistry(clock)
    hooks = {"on_leadership": lambda *term: terms.append(term), "on_unplaceable": told.append}
    async with cluster(registry, hub, here, clock, **hooks) as engine:
        lease = await registry.leader()
        assert lease is not None
        assert terms == [(A, lease.revision, True)]
        await registry.put_unit("web.service", unit("MachineMetadata=role=web"), desired_state="launched")
        await clock.settle()
        assert told == [{"web.service": ("machine aaaaaaaa: metadata role=web not satisfied",)}]
        passes = engine.passes
        engine.machines_changed()
        await clock.settle()
        assert (engine.passes, len(told)) == (passes + 1, 1)  # another pass, the same reasons: not told again
        here.set_metadata({"role": "web"})
        await clock.settle()
        assert told[1:] == [{}]
    assert terms == [(A, lease.revision, True), (A, lease.revision, False)]


async def test_leadership_and_placement_events(hub: EventHub, clock: ManualClock) -> None:
    here = LocalMachine(MachineSpec(A, {"role": "db"}))
    registry = MemoryRegistry(clock)
    await registry.put_unit("db.service", unit("MachineMetadata=role=db"), desired_state="launched")
    sub = hub.subscribe()
    no_web = "machine aaaaaaaa: metadata role=web not satisfied"
    no_db = "machine aaaaaaaa: metadata role=db not satisfied"
    async with cluster(registry, hub, here, clock):
        term = {"machineID": A, "term": 2}
        await clock.settle()
        assert taken(sub) == [
            ("leader", "elected", "leader", term),
            ("schedule", "placed", "db.service", {"name": "db.service", "machineID": A}),
        ]
        await registry.put_unit("web.service", unit("MachineMetadata=role=web"), desired_state="launched")
        await clock.settle()
        assert [e[:3] for e in taken(sub)] == [
            ("unit", "submitted", "web.service"),
            no_machine("web.service", no_web)[:3],
        ]
        here.set_metadata({"role": "web"})
        await clock.settle()
        # The placed db unit is unplaced once, with the leader's reasons; the waiting web unit's placement follows.
        assert taken(sub) == [
            no_machine("db.service", no_db, previousMachineID=A),
            ("schedule", "placed", "web.service", {"name": "web.service", "machineID": A}),
        ]
        assert hub.latest("leader", "leader") is not None
    assert taken(sub) == [("leader", "lost", "leader", term)]
    assert hub.latest("leader", "leader") is None
