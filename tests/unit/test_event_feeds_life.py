"""A unit's whole life on one machine, as the event stream tells it: every feed wired as the agent wires them.

Real engine, reconciler, supervisor and unit actor, over a MemoryRegistry, the fake runtime and a ManualClock; no
sleeps. The fake container of the hello_world unit runs until SIGTERM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.reconciler import Reconciler
from fleetlet.agent.supervisor import Supervisor
from fleetlet.engine import Engine, MachineSpec
from fleetlet.events.hub import EventHub
from fleetlet.events.local_feeds import LeaderFeed, MachineFeed, PlacementFeed, StateFeed
from fleetlet.events.registry_feed import RegistryFeed
from fleetlet.registry import MemoryRegistry
from fleetlet.units.syntax import parse
from tests.fleet_units import HELLO_WORLD
from tests.unit.test_agent_supervisor import MACHINE_ID, Machine

pytestmark = pytest.mark.anyio

HELLO = "hello.service"
KEY = f"{HELLO}@{MACHINE_ID}"
METADATA = {"group": "hw_webservers"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def agent(m: Machine, hub: EventHub, registry: MemoryRegistry) -> AsyncIterator[Supervisor]:
    """One machine's agent with its feeds; the block's end shuts it down as the agent does (units left running)."""
    here = LocalMachine(MachineSpec(MACHINE_ID, METADATA, "10.0.0.5"))
    MachineFeed(hub, here).start()
    leader, placement, states = LeaderFeed(hub), PlacementFeed(hub), StateFeed(hub, MACHINE_ID)
    engine = Engine(
        registry,
        lambda: [here.spec],
        m.clock,
        machine_id=MACHINE_ID,
        settle=0,
        on_leadership=leader.leadership,
        on_unplaceable=placement.unplaceable,
    )
    here.subscribe(engine.machines_changed)
    supervisor = Supervisor(m.node, m.journal, states.publish, on_unload=states.removed)
    reconciler = Reconciler(registry, supervisor, lambda: here.spec, m.clock)
    async with anyio.create_task_group() as tg:
        await tg.start(RegistryFeed(registry, hub, reasons=placement.reasons).run)
        await tg.start(engine.run)
        await tg.start(supervisor.run)
        await tg.start(reconciler.run)
        yield supervisor
        await supervisor.aclose()
        tg.cancel_scope.cancel()


async def settle(m: Machine) -> None:
    for _ in range(3):
        await m.clock.settle()


def was(desired: str) -> dict[str, str]:
    return {"previousDesiredState": desired}


def state(active: str, sub: str, was: tuple[str, str] | None, container: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": HELLO,
        "machineID": MACHINE_ID,
        "hash": parse(HELLO_WORLD).hash,
        "load": "loaded",
        "active": active,
        "sub": sub,
        "result": "success",
        "since": 1_800_000_000.0,
        "restarts": 0,
    }
    if container is not None:
        payload["containerID"] = container
    if was is not None:
        payload["previous"] = {"load": "loaded", "active": was[0], "sub": was[1], "result": "success"}
    return payload


async def test_submit_start_stop_destroy_is_told_event_by_event() -> None:
    m = Machine()
    hub = EventHub(m.clock)
    sub = hub.subscribe()
    hello = parse(HELLO_WORLD, HELLO)
    unit = {"name": HELLO, "hash": hello.hash}
    destroyed = {"reason": "unit destroyed"}
    dead = {"load": "loaded", "active": "inactive", "sub": "dead", "result": "success"}
    options = [{"section": o.section, "name": o.name, "value": o.value} for o in hello.options]
    async with MemoryRegistry(m.clock) as registry, agent(m, hub, registry) as supervisor:
        await registry.put_unit(HELLO, hello)
        await settle(m)
        await registry.set_desired_state(HELLO, "launched")
        await settle(m)
        running = supervisor.status(HELLO)
        assert running is not None
        assert running.container_id
        container = running.container_id
        await registry.set_desired_state(HELLO, "loaded")
        await settle(m)
        await registry.delete_unit(HELLO)
        await settle(m)
        assert await m.running() == {}
    seen = [(e.topic, e.type, e.key, dict(e.payload)) for e in sub.poll(1000)]
    assert seen == [
        ("machine", "joined", MACHINE_ID, {"id": MACHINE_ID, "primaryIP": "10.0.0.5", "metadata": METADATA}),
        ("leader", "elected", "leader", {"machineID": MACHINE_ID, "term": 1}),
        ("unit", "submitted", HELLO, {**unit, "desiredState": "inactive", "options": options}),
        (
            "unit",
            "desired-state-changed",
            HELLO,
            {**unit, "desiredState": "launched", "options": options, **was("inactive")},
        ),
        ("schedule", "placed", HELLO, {"name": HELLO, "machineID": MACHINE_ID}),
        # Two ExecStartPre commands: the second republishes start-pre, which is no event.
        ("state", "changed", KEY, state("activating", "start-pre", None)),
        ("state", "changed", KEY, state("activating", "start", ("activating", "start-pre"))),
        ("state", "changed", KEY, state("active", "running", ("activating", "start"), container)),
        (
            "unit",
            "desired-state-changed",
            HELLO,
            {**unit, "desiredState": "loaded", "options": options, **was("launched")},
        ),
        ("state", "changed", KEY, state("deactivating", "stop", ("active", "running"), container)),
        ("state", "changed", KEY, state("deactivating", "stop-sigterm", ("deactivating", "stop"), container)),
        ("state", "changed", KEY, state("inactive", "dead", ("deactivating", "stop-sigterm"))),
        ("unit", "destroyed", HELLO, {**unit, "desiredState": "loaded"}),
        ("schedule", "unplaced", HELLO, {"name": HELLO, "previousMachineID": MACHINE_ID, **destroyed}),
        ("state", "removed", KEY, {"name": HELLO, "machineID": MACHINE_ID, "previous": dead}),
        ("leader", "lost", "leader", {"machineID": MACHINE_ID, "term": 1}),
    ]
    assert [(e.topic, e.type) for e in hub.snapshot()] == [("machine", "joined")]


async def test_a_replaced_unit_changes_state_in_place_and_is_not_removed() -> None:
    m = Machine()
    hub = EventHub(m.clock)
    v1 = parse(HELLO_WORLD, HELLO)
    v2 = parse(HELLO_WORLD.replace("Description=HelloWorldApp", "Description=HelloWorldApp v2"), HELLO)
    async with MemoryRegistry(m.clock) as registry, agent(m, hub, registry):
        await registry.put_unit(HELLO, v1, desired_state="launched")
        await settle(m)
        sub = hub.subscribe()
        await registry.put_unit(HELLO, v2, desired_state="launched")
        await settle(m)
        seen = [(e.topic, e.type, e.payload.get("hash"), e.payload.get("sub")) for e in sub.poll(1000)]
    assert seen[0] == ("unit", "replaced", v2.hash, None)
    assert [s for s in seen if s[0] == "state"] == [
        ("state", "changed", v1.hash, "stop"),
        ("state", "changed", v1.hash, "stop-sigterm"),
        ("state", "changed", v1.hash, "dead"),
        ("state", "changed", v2.hash, "start-pre"),
        ("state", "changed", v2.hash, "start"),
        ("state", "changed", v2.hash, "running"),
    ]
    assert hub.latest("state", KEY) is not None
