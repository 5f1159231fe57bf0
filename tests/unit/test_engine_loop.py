"""The engine's loop on MemoryRegistry and a ManualClock: placing, coalescing, conflicts, leadership.

No sleeps: ``clock.settle()`` lets every task run until blocked and ``clock.advance`` moves the settle time and TTLs.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import ManualClock
from fleetlet.engine import Engine, MachineSpec
from fleetlet.engine.engine import PARALLEL_WRITES
from fleetlet.registry import Change, MemoryRegistry, RegistryError, RevisionCompacted
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.model import LeaderRecord
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

A, B, C = ("a" * 32, "b" * 32, "c" * 32)
SETTLE = 0.5
TTL = 3.0


def unit(x_fleet: str = "") -> UnitFile:
    section = f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else ""
    return parse(f"[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/sleep 1\n{section}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def registry(clock: ManualClock) -> MemoryRegistry:
    return MemoryRegistry(clock)


@pytest.fixture
def decisions(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The engine's log lines, as they come."""
    caplog.set_level(logging.INFO, logger="fleetlet.engine")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("fleetlet.engine")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def engine_for(
    registry: MemoryRegistry, clock: ManualClock, machines: Sequence[MachineSpec], machine_id: str = A
) -> Engine:
    return Engine(registry, lambda: machines, clock, machine_id=machine_id, lease_ttl=TTL, settle=SETTLE)


@asynccontextmanager
async def running(*engines: Engine) -> AsyncIterator[dict[Engine, anyio.CancelScope]]:
    """Run each engine in its own cancel scope (to stop one alone); all stop at the end."""
    scopes: dict[Engine, anyio.CancelScope] = {}

    async def run(engine: Engine, *, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            scopes[engine] = scope
            await engine.run(task_status=task_status)

    async with anyio.create_task_group() as tg:
        for engine in engines:
            await tg.start(run, engine)
        yield scopes
        tg.cancel_scope.cancel()


async def settled(clock: ManualClock) -> None:
    """Let the engine see every change, wait out the settle time, and let it write."""
    await clock.settle()
    clock.advance(SETTLE)
    await clock.settle()


async def placements(registry: MemoryRegistry) -> dict[str, str]:
    return {name: entry.machine_id for name, entry in (await registry.schedule()).entries.items()}


@pytest.mark.anyio
async def test_launched_unit_goes_to_the_least_loaded_machine(
    registry: MemoryRegistry, clock: ManualClock, decisions: list[str]
) -> None:
    for name, machine in (("one.service", A), ("two.service", B)):
        await registry.put_unit(name, unit(), desired_state="launched")
        await registry.set_machine(name, machine)
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B), MachineSpec(C)])
    async with running(engine):
        assert engine.leading
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        await settled(clock)
        assert await placements(registry) == {"one.service": A, "two.service": B, "hello.service": C}
    assert "placed hello.service on cccccccc: least loaded of 3 eligible machines" in decisions
    assert not engine.leading
    assert await registry.leader() is None  # resigned on the way out


@pytest.mark.anyio
async def test_inactive_unit_is_unplaced(registry: MemoryRegistry, clock: ManualClock, decisions: list[str]) -> None:
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        await settled(clock)
        assert await placements(registry) == {"hello.service": A}
        await registry.set_desired_state("hello.service", "inactive")
        await settled(clock)
        assert await placements(registry) == {}
    assert decisions[-2:] == [
        "unplaced hello.service from aaaaaaaa: desired state is inactive",
        "machine aaaaaaaa stopped leading",
    ]


@pytest.mark.anyio
async def test_unit_needing_missing_metadata_stays_unscheduled_with_a_reason(
    registry: MemoryRegistry, clock: ManualClock, decisions: list[str]
) -> None:
    machines = [MachineSpec(A), MachineSpec(B, {"group": "web"})]
    engine = Engine(registry, lambda: machines, clock, machine_id=A, lease_ttl=TTL, settle=SETTLE)
    async with running(engine):
        await registry.put_unit("gpu.service", unit("MachineMetadata=group=gpu"), desired_state="launched")
        await settled(clock)
        assert await placements(registry) == {}
        assert engine.unplaceable == {
            "gpu.service": (
                "machine aaaaaaaa: metadata group=gpu not satisfied",
                "machine bbbbbbbb: metadata group=gpu not satisfied",
            )
        }
        assert "cannot place gpu.service: machine aaaaaaaa: metadata group=gpu not satisfied; " in decisions[-1]

        machines.append(MachineSpec(C, {"group": "gpu"}))  # a machine joins: the membership view changed
        engine.machines_changed()
        await settled(clock)
        assert await placements(registry) == {"gpu.service": C}
        assert engine.unplaceable == {}


@pytest.mark.anyio
async def test_a_burst_of_changes_is_one_pass_and_texts_are_parsed_once(
    registry: MemoryRegistry, clock: ManualClock
) -> None:
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B)])
    async with running(engine):
        await clock.settle()
        before = engine.passes
        for i in range(100):
            await registry.put_unit(f"u{i:03}.service", unit(), desired_state="launched")
        await clock.settle()
        assert engine.passes == before  # still settling
        clock.advance(SETTLE)
        await clock.settle()
        assert engine.passes == before + 1
        placed = await placements(registry)
        assert len(placed) == 100
        assert sorted(placed.values()).count(A) == 50  # least loaded each time: evenly spread
        # The engine's own writes come back through the watch without causing another pass.
        clock.advance(SETTLE)
        await clock.settle()
        assert engine.passes == before + 1
        # A desired-state change does not re-parse the text: requirements are cached by hash.
        await registry.set_desired_state("u000.service", "loaded")
        await settled(clock)
        assert engine.mirror.parses == 100


@pytest.mark.anyio
async def test_a_steady_trickle_is_scheduled_after_settle_max(registry: MemoryRegistry, clock: ManualClock) -> None:
    engine = Engine(registry, lambda: [MachineSpec(A)], clock, machine_id=A, settle=0.5, settle_max=2.0)
    async with running(engine):
        await clock.settle()
        before = engine.passes
        for i in range(4):  # a change every 0.4 s never leaves 0.5 s of quiet
            await registry.put_unit(f"u{i}.service", unit(), desired_state="launched")
            await clock.settle()
            clock.advance(0.4)
        await clock.settle()
        assert engine.passes == before
        clock.advance(0.4)  # 2.0 s after the first change
        await clock.settle()
        assert engine.passes == before + 1
        assert len(await placements(registry)) == 4


class RacingRegistry(MemoryRegistry):
    """Another writer places ``unit`` on ``machine`` just before the engine's first write for it lands."""

    def __init__(self, clock: ManualClock, unit: str, machine: str) -> None:
        super().__init__(clock)
        self.race = (unit, machine)
        self.raced_revision = 0

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        if unit == self.race[0] and not self.raced_revision:
            self.raced_revision = await super().set_machine(unit, self.race[1])
        return await super().set_machine(unit, machine_id, expect_revision=expect_revision, term=term)


@pytest.mark.anyio
async def test_a_stale_decision_does_not_overwrite_another_writer(clock: ManualClock, decisions: list[str]) -> None:
    registry = RacingRegistry(clock, "hello.service", B)
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B)])
    async with running(engine):
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        await settled(clock)  # the engine chose A (tie by ID), but B was written first
        clock.advance(SETTLE)  # the pass it runs again after re-reading
        await clock.settle()
        entry = (await registry.schedule()).entries["hello.service"]
        assert (entry.machine_id, entry.revision) == (B, registry.raced_revision)
    assert not any(line.startswith("placed hello.service") for line in decisions)
    assert any(line.startswith("not applying place hello.service") for line in decisions)


@pytest.mark.anyio
async def test_an_engine_without_the_record_decides_nothing_until_the_ttl_expires(
    registry: MemoryRegistry, clock: ManualClock
) -> None:
    other = await registry.campaign("other", 10)
    assert other is not None
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        for _ in range(9):
            clock.advance(1)
            await clock.settle()
            assert not engine.leading
            assert await placements(registry) == {}
        assert engine.passes == 0
        clock.advance(1)  # t = 10: the other machine's record expires
        await clock.settle()
        assert engine.leading
        assert clock.monotonic() == 10
        assert await placements(registry) == {"hello.service": A}


class PartitionedRegistry(MemoryRegistry):
    """A registry that ``machine`` cannot reach for leadership while ``partitioned``, as behind a network partition."""

    partitioned = False

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        if self.partitioned and machine_id == A:
            raise RegistryError("registry unreachable")
        return await super().campaign(machine_id, ttl)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        if self.partitioned and record.machine_id == A:
            raise RegistryError("registry unreachable")
        return await super().renew(record, ttl)


@pytest.mark.anyio
async def test_losing_the_record_stops_decisions(clock: ManualClock, decisions: list[str]) -> None:
    registry = PartitionedRegistry(clock)
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        assert engine.leading
        registry.partitioned = True
        for _ in range(3):
            clock.advance(1)
            await clock.settle()
        assert not engine.leading  # t = 3: the lease ran out on the clock
        assert await registry.campaign("other", 100) is not None
        await clock.settle()
        registry.partitioned = False
        passes = engine.passes
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        for _ in range(5):
            await settled(clock)
        assert await placements(registry) == {}
        assert engine.passes == passes
        assert not engine.leading
    assert "machine aaaaaaaa lost leadership: the lease expired while the registry was unreachable" in decisions


@pytest.mark.anyio
async def test_two_engines_never_lead_together_and_place_each_unit_once(
    registry: MemoryRegistry, clock: ManualClock, decisions: list[str]
) -> None:
    machines = [MachineSpec(A), MachineSpec(B)]
    first, second = engine_for(registry, clock, machines, A), engine_for(registry, clock, machines, B)

    async def step(seconds: float) -> None:
        clock.advance(seconds)
        await clock.settle()
        assert first.leading + second.leading <= 1

    async with running(first, second) as scopes:
        assert (first.leading, second.leading) == (True, False)
        for i in range(10):
            await registry.put_unit(f"u{i}.service", unit(), desired_state="launched")
        await clock.settle()
        for _ in range(10):
            await step(SETTLE)
        scopes[first].cancel()  # the leader stops: it resigns, and the other takes over at its next campaign
        await step(0)
        assert not first.leading
        for _ in range(4):
            await step(SETTLE)
        assert second.leading
        for i in range(10, 15):
            await registry.put_unit(f"u{i}.service", unit(), desired_state="launched")
        for _ in range(10):
            await step(SETTLE)
        placed = await placements(registry)
    assert sorted(placed) == sorted(f"u{i}.service" for i in range(15))
    placed_lines = [line for line in decisions if line.startswith("placed ")]
    assert len(placed_lines) == 15
    assert not [line for line in decisions if line.startswith(("moved ", "unplaced "))]


@pytest.mark.anyio
async def test_the_record_changing_hands_deposes_at_once(clock: ManualClock, decisions: list[str]) -> None:
    registry = PartitionedRegistry(clock)
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        registry.partitioned = True  # so that the engine cannot simply win the record back
        record = await registry.leader()
        assert record is not None
        await registry.resign(record)  # as an operator or a registry failover might
        await clock.settle()
        assert not engine.leading
        assert clock.monotonic() == 0  # not at the end of the TTL: as soon as the watch showed it
        assert await registry.campaign("other", 100) is not None
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        await settled(clock)
        assert await placements(registry) == {}
    assert "machine aaaaaaaa lost leadership: the leader record changed at revision 2" in decisions


class CompactingRegistry(MemoryRegistry):
    """A registry whose first watch finds its history compacted, as a watcher that fell far behind would."""

    watches = 0

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        self.watches += 1
        if self.watches == 1:
            async with sink:
                raise RevisionCompacted(from_revision, from_revision + 1)
        await super().watch(from_revision, sink, prefix=prefix)


@pytest.mark.anyio
async def test_a_compacted_watch_reads_everything_again(clock: ManualClock, decisions: list[str]) -> None:
    registry = CompactingRegistry(clock)
    await registry.put_unit("early.service", unit(), desired_state="launched")
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        await clock.settle()
        assert registry.watches == 2
        await registry.put_unit("hello.service", unit(), desired_state="launched")
        await settled(clock)
        assert await placements(registry) == {"early.service": A, "hello.service": A}
    assert any(line.startswith("registry watch fell behind") for line in decisions)
    assert engine.mirror.parses == 2  # the re-read kept the parsed requirements


@pytest.mark.anyio
async def test_a_new_term_waits_to_hear_of_the_machines_its_schedule_names(
    registry: MemoryRegistry, clock: ManualClock, decisions: list[str]
) -> None:
    """A restarted leader knows only itself: the units of machines not heard from yet stay, for a grace period."""
    await registry.put_unit("kept.service", unit(), desired_state="launched")
    await registry.set_machine("kept.service", B)
    await registry.put_unit("gone.service", unit(), desired_state="launched")
    await registry.set_machine("gone.service", C)
    machines = [MachineSpec(A)]
    engine = Engine(registry, lambda: machines, clock, machine_id=A, lease_ttl=TTL, settle=SETTLE, membership_grace=5.0)
    async with running(engine):
        await settled(clock)
        assert await placements(registry) == {"kept.service": B, "gone.service": C}  # held: nothing moved
        assert any("waiting up to" in line and "bbbbbbbb" in line for line in decisions)
        machines.append(MachineSpec(B))  # B gossips in: the hold goes on for C, which is still unheard of
        engine.machines_changed()
        await settled(clock)
        assert await placements(registry) == {"kept.service": B, "gone.service": C}
        for _ in range(5):  # the grace runs out (in steps: the lease is renewed on the way)
            clock.advance(1.0)
            await clock.settle()
        await settled(clock)  # C is gone: its unit moves
        placed = await placements(registry)
        assert placed["kept.service"] == B
        assert placed["gone.service"] in (A, B), decisions


@pytest.mark.anyio
async def test_the_grace_runs_from_the_engine_s_start_so_a_later_term_moves_a_dead_machine_s_units_at_once(
    registry: MemoryRegistry, clock: ManualClock, decisions: list[str]
) -> None:
    """On etcd another agent leads first; when this engine takes over, the grace is long past: no hold."""
    await registry.put_unit("orphan.service", unit(), desired_state="launched")
    await registry.set_machine("orphan.service", C)  # C was the old leader's machine, and is dead
    other = await registry.campaign(B, 8.0)  # a term that outlasts this engine's grace
    assert other is not None
    engine = Engine(
        registry, lambda: [MachineSpec(A)], clock, machine_id=A, lease_ttl=TTL, settle=SETTLE, membership_grace=5.0
    )
    async with running(engine):
        assert not engine.leading
        assert engine.leader == B
        for _ in range(10):  # B never renews: its term ends, well after the grace
            clock.advance(1.0)
            await clock.settle()
        await settled(clock)
        assert engine.leading
        assert engine.leader == A
        assert await placements(registry) == {"orphan.service": A}, decisions
        assert not any("waiting up to" in line for line in decisions)


class GatedRegistry(MemoryRegistry):
    """set_machine waits at a gate, so a test sees how many writes the engine has in flight at once."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.gate = anyio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.conflict_on: str | None = None  # a unit whose write another writer got to first
        self.written: list[tuple[str, str]] = []  # the engine's writes that succeeded
        self.terms: set[int | None] = set()  # the terms the engine's writes were fenced by

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.terms.add(term)
        try:
            await self.gate.wait()
            if unit == self.conflict_on:
                self.conflict_on = None
                await super().set_machine(unit, C)  # the other writer's decision: the entry's revision moves on
            revision = await super().set_machine(unit, machine_id, expect_revision=expect_revision, term=term)
            self.written.append((unit, machine_id))
            return revision
        finally:
            self.in_flight -= 1


@pytest.mark.anyio
async def test_a_pass_writes_its_placements_several_at_a_time(clock: ManualClock, decisions: list[str]) -> None:
    registry = GatedRegistry(clock)
    for i in range(40):
        await registry.put_unit(f"u{i:02}.service", unit(), desired_state="launched")
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B)])
    async with running(engine):
        await clock.settle()
        assert registry.most_in_flight == PARALLEL_WRITES  # the first pass, all its writers waiting at the gate
        registry.gate.set()
        await settled(clock)
        placed = await placements(registry)
        leader = await registry.leader()
    assert leader is not None
    assert registry.terms == {leader.revision}  # every write fenced by the engine's own term
    assert len(placed) == 40
    assert sorted(collections.Counter(placed.values()).values()) == [20, 20]
    assert sum(line.startswith("placed ") for line in decisions) == 40


@pytest.mark.anyio
async def test_a_conflict_among_concurrent_writes_stops_the_pass_and_the_next_decides_from_the_schedule(
    clock: ManualClock, decisions: list[str]
) -> None:
    registry = GatedRegistry(clock)
    for i in range(40):
        await registry.put_unit(f"u{i:02}.service", unit(), desired_state="launched")
    registry.conflict_on = "u05.service"
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B), MachineSpec(C)])
    registry.gate.set()
    async with running(engine):
        await settled(clock)
        await settled(clock)
        placed = await placements(registry)
    assert sum("not applying place u05.service" in line for line in decisions) == 1, decisions
    assert placed["u05.service"] == C  # the other writer's decision stands: it was never overwritten
    assert len(placed) == 40  # the next pass placed whatever the stopped one left
    assert engine.passes >= 2


class UnreachableRegistry(MemoryRegistry):
    """Renewals fail as ``failure`` says: a registry that cannot be reached, or one that fails unexpectedly."""

    failure: Exception | None = None

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        if self.failure is not None:
            raise self.failure
        return await super().renew(record, ttl)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "line", "traceback"),
    [
        (
            RegistryUnavailable("http://etcd:2379", "connection refused"),
            "could not renew the leader record: the cluster's registry at http://etcd:2379 cannot be reached: "
            "connection refused",
            False,
        ),
        (RegistryError("the registry answered garbage"), "could not renew the leader record", True),
    ],
)
async def test_an_unreachable_registry_is_one_line_in_the_log_and_anything_else_has_its_traceback(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, failure: Exception, line: str, traceback: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="fleetlet.engine")
    registry = UnreachableRegistry(clock)
    engine = engine_for(registry, clock, [MachineSpec(A)])
    async with running(engine):
        await clock.settle()  # the term's tasks are asleep until the first renewal
        registry.failure = failure
        clock.advance(TTL / 3)
        await clock.settle()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("could not renew")]
    assert record.getMessage() == line
    assert (record.exc_info is not None) is traceback


@pytest.mark.anyio
async def test_a_follower_is_written_only_after_its_peer_so_a_failed_peer_write_never_strands_it(
    clock: ManualClock, decisions: list[str]
) -> None:
    registry = GatedRegistry(clock)
    for i in range(10):
        await registry.put_unit(f"u{i}.service", unit(), desired_state="launched")
    await registry.put_unit("web.service", unit(), desired_state="launched")
    await registry.put_unit("sidekick.service", unit("MachineOf=web.service"), desired_state="launched")
    registry.conflict_on = "web.service"  # another writer places web on C while this pass places it elsewhere
    registry.gate.set()
    engine = engine_for(registry, clock, [MachineSpec(A), MachineSpec(B), MachineSpec(C)])
    async with running(engine):
        await settled(clock)
        await settled(clock)
        placed = await placements(registry)
    assert placed["web.service"] == placed["sidekick.service"] == C
    # Never written anywhere but beside web: not in the pass whose write of web failed.
    assert [machine for name, machine in registry.written if name == "sidekick.service"] == [C], registry.written
