"""The supervisor over the fakes: plans carried out, containers replaced, removed, left running and adopted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from fleetlet.agent.node import Node
from fleetlet.agent.reconcile import DesiredUnit, LocalState, Task, plan
from fleetlet.agent.supervisor import Supervisor
from fleetlet.clock import ManualClock
from fleetlet.exec.fake_runtime import Behaviour, FakeRuntime
from fleetlet.exec.runtime import LABEL_HASH
from fleetlet.exec.subprocess_runner import FakeProcessRunner
from fleetlet.service.journal import Journal, MemoryJournal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import CheckedUnit, load_unit
from fleetlet.units.specifiers import MachineFacts
from tests.fleet_units import HELLO_WORLD

pytestmark = pytest.mark.anyio

MACHINE_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f801"
HELLO_V2 = HELLO_WORLD.replace("Description=HelloWorldApp", "Description=HelloWorldApp v2")
CRASHING = """\
[Service]
ExecStart=/usr/bin/docker run --rm --name crash busybox false
Restart=always
RestartSec=1
StartLimitBurst=2
StartLimitIntervalSec=60
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def behaviour(body: Mapping[str, Any]) -> Behaviour:
    """``false`` exits 1 at once; anything else runs until SIGTERM and then exits 0."""
    if "false" in (body.get("Cmd") or []):
        return Behaviour(exit_code=1)
    return Behaviour(trap={"SIGTERM": 0})


@dataclass
class Machine:
    """One machine's fakes, shared by the supervisors an agent runs one after the other."""

    clock: ManualClock = field(default_factory=ManualClock)
    runtime: FakeRuntime = field(init=False)
    journals: dict[str, MemoryJournal] = field(default_factory=dict)
    published: list[UnitStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runtime = FakeRuntime(self.clock, behaviour=behaviour)

    @property
    def node(self) -> Node:
        return Node(self.runtime, FakeProcessRunner(clock=self.clock), self.clock, MachineFacts(machine_id=MACHINE_ID))

    def journal(self, name: str) -> Journal:
        return self.journals.setdefault(name, MemoryJournal(name, self.clock))

    async def running(self) -> dict[str, str]:
        """Running containers: name -> unit hash."""
        return {c.name: c.labels[LABEL_HASH] for c in await self.runtime.list() if c.status == "running"}


@asynccontextmanager
async def supervisor(machine: Machine, *, purge: bool = False) -> AsyncIterator[Supervisor]:
    """A running supervisor, shut down (detaching, or purging) when the block ends."""
    sup = Supervisor(machine.node, machine.journal, machine.published.append)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield sup
        await sup.aclose(purge=purge)


def units(**texts: str) -> dict[str, CheckedUnit]:
    return {f"{name}.service": load_unit(text, f"{name}.service") for name, text in texts.items()}


def desired(
    checked: Mapping[str, CheckedUnit], state: LocalState = "launched", revision: int = 1
) -> dict[str, DesiredUnit]:
    return {name: DesiredUnit(name, unit.hash, state, revision) for name, unit in checked.items()}


async def reconcile(sup: Supervisor, want: Mapping[str, DesiredUnit], checked: Mapping[str, CheckedUnit]) -> list[Task]:
    """One pass of the agent's loop: plan from what runs, then carry the plan out."""
    tasks = plan(want, sup.current())
    await sup.apply(tasks, checked)
    return tasks


async def test_plan_apply_current_round_trip() -> None:
    m = Machine()
    hello = units(hello=HELLO_WORLD)
    async with supervisor(m) as sup:
        tasks = await reconcile(sup, desired(hello), hello)
        assert [(t.kind, t.unit) for t in tasks] == [("load", "hello.service"), ("start", "hello.service")]
        current = sup.current()["hello.service"]
        assert (current.hash, current.active, current.sub, current.started_for) == (
            hello["hello.service"].hash,
            "active",
            "running",
            1,
        )
        assert await m.running() == {"busybox1": hello["hello.service"].hash}
        assert plan(desired(hello), sup.current()) == []
        assert m.published[-1].describe() == "loaded active running"

        tasks = await reconcile(sup, desired(hello, "loaded", 2), hello)
        assert [(t.kind, t.unit) for t in tasks] == [("stop", "hello.service")]
        assert sup.current()["hello.service"].active == "inactive"
        assert await m.running() == {}
        assert plan(desired(hello, "loaded", 2), sup.current()) == []


async def test_a_hash_change_replaces_the_container() -> None:
    m = Machine()
    v1, v2 = units(hello=HELLO_WORLD), units(hello=HELLO_V2)
    async with supervisor(m) as sup:
        await reconcile(sup, desired(v1), v1)
        tasks = await reconcile(sup, desired(v2, revision=2), v2)
        assert [(t.kind, t.unit) for t in tasks] == [("replace", "hello.service"), ("start", "hello.service")]
        assert len(m.runtime.called("create")) == 2
        assert await m.running() == {"busybox1": v2["hello.service"].hash}
        assert sup.current()["hello.service"].hash == v2["hello.service"].hash
        assert plan(desired(v2, revision=2), sup.current()) == []
        messages = [e.message for e in m.journals["hello.service"].tail(1000)]
        assert "Stopped HelloWorldApp." in messages


async def test_unload_stops_the_unit_and_drops_its_actor() -> None:
    m = Machine()
    hello = units(hello=HELLO_WORLD)
    async with supervisor(m) as sup:
        await reconcile(sup, desired(hello), hello)
        tasks = await reconcile(sup, {}, {})
        assert tasks == [
            Task("unload", "hello.service", "hello.service: no longer desired here, current active running")
        ]
        assert sup.current() == {}
        assert await m.runtime.list() == []  # stopped, and --rm removed it


async def test_shutdown_detaches_and_the_next_supervisor_adopts() -> None:
    m = Machine()
    hello = units(hello=HELLO_WORLD)
    async with supervisor(m) as sup:
        await reconcile(sup, desired(hello), hello)
    assert await m.running() == {"busybox1": hello["hello.service"].hash}
    container = m.published[-1].container_id

    async with supervisor(m) as sup:
        tasks = await reconcile(sup, desired(hello), hello)
        # The plan was made before the actor existed; loading adopted the container, so the start found it running.
        assert [(t.kind, t.unit) for t in tasks] == [("load", "hello.service"), ("start", "hello.service")]
        assert sup.current()["hello.service"].sub == "running"
        assert len(m.runtime.called("create")) == 1
        assert m.published[-1].container_id == container
        assert f"hello.service: Adopted running container {(container or '')[:12]}." in [
            e.message for e in m.journals["hello.service"].tail(1000)
        ]
        assert plan(desired(hello), sup.current()) == []
    assert await m.running() == {"busybox1": hello["hello.service"].hash}


async def test_cancellation_detaches_too() -> None:
    m = Machine()
    hello = units(hello=HELLO_WORLD)
    sup = Supervisor(m.node, m.journal, m.published.append)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await reconcile(sup, desired(hello), hello)
        tg.cancel_scope.cancel()
    assert await m.running() == {"busybox1": hello["hello.service"].hash}
    assert sup.current() == {}


async def test_purge_stops_every_unit() -> None:
    m = Machine()
    both = units(hello=HELLO_WORLD, other=HELLO_WORLD.replace("busybox1", "busybox2"))
    async with supervisor(m, purge=True) as sup:
        await reconcile(sup, desired(both), both)
        assert set(await m.running()) == {"busybox1", "busybox2"}
    assert await m.runtime.list() == []


async def test_a_unit_that_hit_its_start_limit_is_not_restarted_until_started_again() -> None:
    m = Machine()
    crash = units(crash=CRASHING)
    async with supervisor(m) as sup:
        await reconcile(sup, desired(crash), crash)
        while sup.current()["crash.service"].result != "start-limit-hit":
            await m.clock.advance_to_next()  # RestartSec=1, twice; the third start is refused
        assert m.clock.monotonic() == 2.0
        assert len(m.runtime.called("create")) == 2
        # The reconciler runs often: the failed unit is left alone for the revision it was started for ...
        for _ in range(3):
            assert await reconcile(sup, desired(crash), crash) == []
        assert len(m.runtime.called("create")) == 2
        # ... and started once more when the user starts it again (a new revision).
        tasks = await reconcile(sup, desired(crash, revision=2), crash)
        assert [t.reason for t in tasks] == [
            "crash.service: desired launched, current failed (start-limit-hit), not started for revision 2"
        ]
        assert len(m.runtime.called("create")) == 3


async def test_a_unit_that_cannot_be_loaded_does_not_stop_the_plan() -> None:
    m = Machine()
    hello = units(hello=HELLO_WORLD)
    timer = {"tick.timer": load_unit("[Timer]\nOnCalendar=daily\n", "tick.timer")}
    want = desired(hello) | {"tick.timer": DesiredUnit("tick.timer", timer["tick.timer"].hash, "launched", 1)}
    async with supervisor(m) as sup:
        await reconcile(sup, want, hello | timer)
        assert set(sup.current()) == {"hello.service"}
        assert sup.current()["hello.service"].sub == "running"
