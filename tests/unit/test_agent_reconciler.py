"""The reconciler loop over a memory registry and the fakes: schedule entries and global units, kept in line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.reconciler import Reconciler
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.units.syntax import parse
from tests.fleet_units import HELLO_WORLD
from tests.unit.test_agent_supervisor import MACHINE_ID, Machine, supervisor

pytestmark = pytest.mark.anyio

GLOBAL_WEB = """\
[Service]
ExecStart=/usr/bin/docker run --rm --name everywhere busybox sleep 1000

[X-Fleet]
Global=true
MachineMetadata=group=web
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def reconciling(m: Machine, here: LocalMachine) -> AsyncIterator[MemoryRegistry]:
    """A registry and a running reconciler over a supervisor of ``m``; both end with the block."""
    async with MemoryRegistry(m.clock) as registry, supervisor(m) as sup, anyio.create_task_group() as tg:
        reconciler = Reconciler(registry, sup, lambda: here.spec, m.clock)
        here.subscribe(reconciler.wake)
        await tg.start(reconciler.run)
        yield registry
        tg.cancel_scope.cancel()


async def settle(m: Machine) -> None:
    """Let the reconciler see every change and the fakes carry out what it asked."""
    for _ in range(3):
        await m.clock.settle()
        await anyio.wait_all_tasks_blocked()


async def test_a_scheduled_unit_runs_and_one_scheduled_elsewhere_does_not() -> None:
    m = Machine()
    async with reconciling(m, LocalMachine(MachineSpec(MACHINE_ID))) as registry:
        await registry.put_unit("hello.service", parse(HELLO_WORLD, "hello.service"), desired_state="launched")
        await settle(m)
        assert await m.running() == {}  # not scheduled yet

        await registry.set_machine("hello.service", "elsewhere")
        await settle(m)
        assert await m.running() == {}

        await registry.set_machine("hello.service", MACHINE_ID)
        await settle(m)
        assert list(await m.running()) == ["busybox1"]

        await registry.set_desired_state("hello.service", "loaded")
        await settle(m)
        assert await m.running() == {}


async def test_a_global_unit_follows_the_machines_metadata() -> None:
    m = Machine()
    here = LocalMachine(MachineSpec(MACHINE_ID, {"group": "db"}))
    async with reconciling(m, here) as registry:
        await registry.put_unit("g.service", parse(GLOBAL_WEB, "g.service"), desired_state="launched")
        await settle(m)
        assert await m.running() == {}  # metadata does not match; no schedule entry is ever needed

        here.set_metadata({"group": "web"})
        await settle(m)
        assert list(await m.running()) == ["everywhere"]

        here.set_metadata({"group": "db"})
        await settle(m)
        assert await m.running() == {}


class RecordingRegistry(MemoryRegistry):
    """Records what the reconciler reads of the schedule and which prefixes it watches."""

    watched: list[str]
    whole_schedule_reads = 0

    async def schedule(self):  # type: ignore[no-untyped-def]
        self.whole_schedule_reads += 1
        return await super().schedule()

    async def watch(self, from_revision, sink, *, prefix=""):  # type: ignore[no-untyped-def]
        self.watched.append(prefix)
        await super().watch(from_revision, sink, prefix=prefix)


async def test_the_reconciler_reads_and_watches_only_its_own_part_of_the_schedule() -> None:
    """Decisions for other machines never reach this one (fleet woke every agent on every decision)."""
    m = Machine()
    registry = RecordingRegistry(m.clock)
    registry.watched = []
    async with registry, supervisor(m) as sup, anyio.create_task_group() as tg:
        await registry.put_unit("hello.service", parse(HELLO_WORLD, "hello.service"), desired_state="launched")
        await registry.set_machine("hello.service", MACHINE_ID)
        await tg.start(Reconciler(registry, sup, lambda: MachineSpec(MACHINE_ID), m.clock).run)
        await settle(m)
        assert list(await m.running()) == ["busybox1"]
        assert sorted(registry.watched) == ["schedule/" + MACHINE_ID + "/", "units/"]
        assert registry.whole_schedule_reads == 0
        await registry.set_machine("hello.service", "elsewhere")  # moved away: heard as this machine's delete
        await settle(m)
        assert await m.running() == {}
        tg.cancel_scope.cancel()


async def test_two_units_with_the_same_text_run_as_two_units() -> None:
    """The checked-unit cache is keyed by name and hash: one text's specifiers expand per unit."""
    m = Machine()
    same = "[Service]\nExecStart=/usr/bin/docker run --rm --name %p busybox sleep 1000\n"
    async with reconciling(m, LocalMachine(MachineSpec(MACHINE_ID))) as registry:
        for name in ("first.service", "second.service"):
            await registry.put_unit(name, parse(same, name), desired_state="launched")
            await registry.set_machine(name, MACHINE_ID)
        await settle(m)
        assert sorted(await m.running()) == ["first", "second"]
