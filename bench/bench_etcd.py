"""The etcd registry (issue 7): units placed per second through etcd, and which agents each decision wakes.

Workload: 1,000 units submitted with ``put_unit(desired_state="launched")``, ``svc{i%50}@{i}.service`` running
``/bin/true``: the instances of 10 of the 50 templates conflict with each other (``Conflicts=svc{k}@*``, 20
instances for 20 machines), those of 10 more need a ``zone`` (machines have one of 4), the rest are free. 20
machines, each with an "agent": a registry object of its own watching only its own part of the schedule,
``registry.watch(revision, sink, prefix=schedule_prefix(machine))``, and counting what it gets. (A real agent
also watches ``units/``; placements write nothing there.) Every round gets a fresh etcd member (a SQLite file)
with data on tmpfs (/dev/shm), so fsyncs cost next to nothing: the figures are CPU and round trips, not a disk.

Figure 1, placements per second end to end (the units submitted first, outside the measured time):

* fleetlet: one Engine, the leader, on an EtcdRegistry of its own: from the moment it holds the leader record until
  the 20 agents have received all 1,000 placements. It mirrors the registry (reads every unit), runs the
  scheduler, and writes each decision as a conditional ``set_machine``, one after another.
* baseline, registry: the same 1,000 placements (the scheduler's plan, worked out beforehand) written by a plain
  loop of ``EtcdRegistry.set_machine`` calls: no engine, the registry's own cost per write.
* baseline, raw etcd: the same placements as one etcd txn each (the entry and the placement index, compared as
  the registry compares the index), POSTed in a loop by aiohttp, bodies encoded beforehand: the floor of etcd's
  write path for one write at a time from one Python process. Beside it, for headroom only, the same txns with
  20 in flight: what etcd gives writers that do not wait for each other (the engine does, by design).
* SQLite: the engine and the ``set_machine`` loop on SqliteRegistry (``synchronous=FULL``, on tmpfs too), whose 20
  watchers are on the one registry object, in process: what the embedded default costs for the same work.

Figure 2, watch events delivered per agent (target: none about other machines): every change each agent's watch
delivered, and how many were not under its own prefix. Fleet's agents watched every job's key, so every decision
woke all 20 of them: 20,000 wake-ups for these 1,000 decisions, 1,000 per agent.

Also the CPU each round took: this process's and etcd's (from /proc/<pid>/stat), and how busy the whole machine
was meanwhile (/proc/stat), since other work on a shared machine slows both. Run by ``python -m bench``, or alone
with ``python -m bench etcd``.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import anyio
import orjson
from anyio.abc import TaskGroup

from bench.etcd_member import etcd_member, etcd_version
from fleetlet.clock import SystemClock
from fleetlet.engine import Engine, MachineSpec, Snapshot, UnitSpec, schedule
from fleetlet.registry import Change, Registry, SqliteRegistry, schedule_key, schedule_prefix
from fleetlet.registry.etcd import EtcdRegistry
from fleetlet.registry.etcd_gateway import b64
from fleetlet.registry.etcd_layout import PLACEMENT_PREFIX, Layout
from fleetlet.units.check import CheckedUnit, load_unit
from tests.integration.etcd_rig import SCRATCH, find_etcd_binary

UNITS: Final = 1_000
AGENTS: Final = 20
TEMPLATES: Final = 50
ZONES: Final = ("z0", "z1", "z2", "z3")
TIMEOUT: Final = 300.0  # a round that has not delivered everything by then has failed
WATCH_BUFFER: Final = 1024

MACHINES: Final = tuple(MachineSpec(f"{i + 1:032x}", {"zone": ZONES[i % len(ZONES)]}) for i in range(AGENTS))


def _unit(i: int) -> tuple[str, CheckedUnit]:
    template = i % TEMPLATES
    name = f"svc{template}@{i}.service"
    text = f"[Unit]\nDescription=bench unit {i}\n\n[Service]\nExecStart=/bin/true\n"
    if template % 5 == 0:
        text += f"\n[X-Fleet]\nConflicts=svc{template}@*\n"
    elif template % 5 == 1:
        text += f"\n[X-Fleet]\nMachineMetadata=zone={ZONES[template % len(ZONES)]}\n"
    return name, load_unit(text, name)


def _plan(units: Sequence[tuple[str, CheckedUnit]]) -> list[tuple[str, str]]:
    """The scheduler's placements for the workload, in the order the engine would see the units (by name)."""
    specs = tuple(UnitSpec(name, unit.requirements, "launched") for name, unit in sorted(units))
    plan = schedule(Snapshot(specs, MACHINES))
    placed = [(d.unit, d.machine) for d in plan.decisions if d.kind == "place" and d.machine is not None]
    assert len(placed) == UNITS, f"the workload must place every unit, the plan places {len(placed)}"
    return placed


# --- CPU from /proc ----------------------------------------------------------------------------------------------

_TICK: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (fields 14 and 15 of /proc/<pid>/stat); 0 when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core so far, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, IndexError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    own: float
    etcd: float
    machine: tuple[int, int]

    @staticmethod
    def take(etcd_pid: int | None) -> CpuSample:
        return CpuSample(
            time.perf_counter(),
            _cpu_seconds(os.getpid()),
            _cpu_seconds(etcd_pid) if etcd_pid is not None else 0.0,
            _machine_ticks(),
        )


@dataclass(frozen=True, slots=True)
class CpuUse:
    own: float  # cores: CPU seconds per wall second
    etcd: float | None
    machine: float  # fraction of all cores busy, whoever's work

    @staticmethod
    def between(before: CpuSample, after: CpuSample, etcd: bool) -> CpuUse:
        wall = max(after.wall - before.wall, 1e-9)
        total = after.machine[1] - before.machine[1]
        busy = (after.machine[0] - before.machine[0]) / total if total > 0 else 0.0
        return CpuUse((after.own - before.own) / wall, (after.etcd - before.etcd) / wall if etcd else None, busy)


# --- what the agents see, what the writer wrote ------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What each agent's watch delivered: every change, those outside its prefix, and its placements."""

    prefixes: list[str] = field(default_factory=lambda: [schedule_prefix(m.id) for m in MACHINES])
    total: list[int] = field(default_factory=lambda: [0] * AGENTS)
    foreign: list[int] = field(default_factory=lambda: [0] * AGENTS)
    placed: int = 0
    last: float = 0.0  # perf_counter when the last placement was delivered
    done: anyio.Event = field(default_factory=anyio.Event)

    def record(self, agent: int, change: Change) -> None:
        self.total[agent] += 1
        if not change.key.startswith(self.prefixes[agent]):
            self.foreign[agent] += 1
        elif change.kind == "put":
            self.placed += 1
            if self.placed == UNITS:
                self.last = time.perf_counter()
                self.done.set()


@dataclass(slots=True)
class Writes:
    """When the writer's first placement started and its last returned."""

    first: float = 0.0
    last: float = 0.0
    count: int = 0

    def started(self) -> None:
        if not self.first:
            self.first = time.perf_counter()

    def finished(self) -> None:
        self.count += 1
        self.last = time.perf_counter()


class TimedEtcdRegistry(EtcdRegistry):
    """An EtcdRegistry that notes when its placements are written (the engine's writes, seen from outside)."""

    def __init__(self, endpoints: str, writes: Writes) -> None:
        super().__init__(endpoints)
        self.writes = writes

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        self.writes.started()
        revision = await super().set_machine(unit, machine_id, expect_revision=expect_revision, term=term)
        self.writes.finished()
        return revision


class TimedSqliteRegistry(SqliteRegistry):
    """The same for SQLite."""

    def __init__(self, path: Path, writes: Writes) -> None:
        super().__init__(path, SystemClock())
        self.writes = writes

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        self.writes.started()
        revision = await super().set_machine(unit, machine_id, expect_revision=expect_revision, term=term)
        self.writes.finished()
        return revision


@dataclass(frozen=True, slots=True)
class Round:
    label: str
    submitted: float  # units/s of the put_unit loop before the round
    start: float  # perf_counter: the engine holds the leader record, or the write loop starts
    writes: Writes
    tally: Tally
    cpu: CpuUse

    @property
    def seconds(self) -> float:
        return self.tally.last - self.start

    @property
    def rate(self) -> float:
        return UNITS / self.seconds


# A round's writer: started in the round's task group, returns the moment its measured time starts.
Writer = Callable[[TaskGroup], Awaitable[float]]


async def _submit(registry: Registry, units: Sequence[tuple[str, CheckedUnit]]) -> tuple[int, float]:
    """Submit every unit, one put_unit after another; the revision after, and units/s."""
    start = time.perf_counter()
    for name, unit in units:
        await registry.put_unit(name, unit.file, desired_state="launched")
    rate = len(units) / (time.perf_counter() - start)
    return await registry.revision(), rate


async def _agent(registry: Registry, agent: int, revision: int, tally: Tally) -> None:
    send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(registry.watch, revision, send, prefix=tally.prefixes[agent]))
        async with receive:
            async for change in receive:
                tally.record(agent, change)


async def _measure(
    label: str,
    agents: Sequence[Registry],
    revision: int,
    submitted: float,
    writer: Writer,
    writes: Writes,
    etcd_pid: int | None,
) -> Round:
    tally = Tally()
    async with anyio.create_task_group() as tg:
        for agent, registry in enumerate(agents):
            tg.start_soon(_agent, registry, agent, revision, tally)
        before = CpuSample.take(etcd_pid)
        start = await writer(tg)
        with anyio.fail_after(TIMEOUT):
            await tally.done.wait()
        after = CpuSample.take(etcd_pid)
        # Whatever else comes (nothing should), a moment for it to arrive before counting.
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    return Round(label, submitted, start, writes, tally, CpuUse.between(before, after, etcd_pid is not None))


# --- the writers -------------------------------------------------------------------------------------------------


def _through_engine(registry: Registry) -> Writer:
    async def write(tg: TaskGroup) -> float:
        leading = 0.0

        def on_leadership(machine_id: str, term: int, leads: bool) -> None:
            nonlocal leading
            if leads and not leading:
                leading = time.perf_counter()

        engine = Engine(
            registry, lambda: MACHINES, SystemClock(), machine_id=MACHINES[0].id, on_leadership=on_leadership
        )
        await tg.start(engine.run)
        assert leading, "the engine did not win the leader record of a registry of its own"
        return leading

    return write


def _set_machine_loop(registry: Registry, plan: Sequence[tuple[str, str]]) -> Writer:
    async def write(tg: TaskGroup) -> float:
        start = time.perf_counter()
        for unit, machine in plan:  # TimedEtcdRegistry / TimedSqliteRegistry note the times
            await registry.set_machine(unit, machine, expect_revision=0)
        return start

    return write


def _raw_txns(url: str, plan: Sequence[tuple[str, str]], writes: Writes, in_flight: int) -> Writer:
    layout = Layout()

    def body(unit: str, machine: str) -> bytes:
        placement = b64(layout.key(f"{PLACEMENT_PREFIX}{unit}"))
        return orjson.dumps(
            {
                "compare": [{"key": placement, "target": "MOD", "result": "EQUAL", "mod_revision": "0"}],
                "success": [
                    {
                        "request_put": {
                            "key": b64(layout.key(schedule_key(machine, unit))),
                            "value": b64(layout.entry_value(unit, machine)),
                        }
                    },
                    {"request_put": {"key": placement, "value": b64(machine)}},
                ],
            }
        )

    bodies = [body(unit, machine) for unit, machine in plan]

    async def write(tg: TaskGroup) -> float:
        headers = {"Content-Type": "application/json"}
        pending = iter(bodies)

        async def poster(session: aiohttp.ClientSession) -> None:
            for data in pending:  # shared: each body is taken by one poster
                writes.started()
                async with session.post(f"{url}/v3/kv/txn", data=data, headers=headers) as response:
                    answer = orjson.loads(await response.read())
                assert response.status == 200, answer
                assert answer.get("succeeded"), answer
                writes.finished()

        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()
            async with anyio.create_task_group() as posters:
                for _ in range(in_flight):
                    posters.start_soon(poster, session)
        return start

    return write


# --- the rounds --------------------------------------------------------------------------------------------------

RAW_IN_FLIGHT: Final = 20
LABELS: Final = {
    "etcd raw": "baseline  raw etcd txn per placement, one at a time",
    "etcd raw concurrent": f"(headroom) raw etcd txns, {RAW_IN_FLIGHT} in flight",
    "etcd loop": "baseline  EtcdRegistry.set_machine loop, no engine",
    "etcd engine": "fleetlet  Engine (leader) on etcd, 20 agent watches",
    "sqlite loop": "SQLite    SqliteRegistry.set_machine loop",
    "sqlite engine": "SQLite    Engine (leader), 20 watches in process",
}


async def _etcd_round(binary: str, how: str, units: Sequence[tuple[str, CheckedUnit]]) -> Round:
    plan = _plan(units)
    writes = Writes()
    async with etcd_member(binary) as member, AsyncExitStack() as stack:
        registry = await stack.enter_async_context(TimedEtcdRegistry(member.url, writes))
        revision, submitted = await _submit(registry, units)
        agents = [await stack.enter_async_context(EtcdRegistry(member.url)) for _ in MACHINES]
        writer = {
            "etcd engine": lambda: _through_engine(registry),
            "etcd loop": lambda: _set_machine_loop(registry, plan),
            "etcd raw": lambda: _raw_txns(member.url, plan, writes, 1),
            "etcd raw concurrent": lambda: _raw_txns(member.url, plan, writes, RAW_IN_FLIGHT),
        }[how]()
        return await _measure(how, agents, revision, submitted, writer, writes, member.pid)


async def _sqlite_round(directory: Path, how: str, units: Sequence[tuple[str, CheckedUnit]]) -> Round:
    plan = _plan(units)
    writes = Writes()
    async with TimedSqliteRegistry(directory / f"{how.replace(' ', '-')}.db", writes) as registry:
        revision, submitted = await _submit(registry, units)
        writer = _through_engine(registry) if how == "sqlite engine" else _set_machine_loop(registry, plan)
        return await _measure(how, [registry] * AGENTS, revision, submitted, writer, writes, None)


def _print(rounds: dict[str, Round]) -> None:
    floor = rounds["etcd raw"]
    print(f"  {'':52} {'placements/s':>12} {'wall':>8}  {'vs raw':>6}  {'CPU: here':>9} {'etcd':>5} {'machine':>7}")
    for how, r in rounds.items():
        etcd = f"{r.cpu.etcd:.0%}" if r.cpu.etcd is not None else "-"
        print(
            f"  {LABELS[how]:52} {r.rate:>12,.0f} {r.seconds * 1000:>6,.0f}ms  {r.rate / floor.rate:>5.2f}x"
            f"  {r.cpu.own:>9.0%} {etcd:>5} {r.cpu.machine:>7.0%}"
        )
        if how.endswith("engine"):
            w, loop = r.writes, rounds[how.replace("engine", "loop")]
            print(
                f"  {'':4}{r.rate / loop.rate:.2f}x its set_machine loop; from leading: "
                f"{(w.first - r.start) * 1000:,.0f} ms to the first write (mirror load + schedule), then "
                f"{w.count:,} writes in {(w.last - w.first) * 1000:,.0f} ms, the last delivered "
                f"{(r.tally.last - w.last) * 1000:+,.0f} ms after the last write returned"
            )
    submits = ", ".join(f"{r.submitted:,.0f}" for r in rounds.values())
    print(f"  submitting the {UNITS:,} units before each round (put_unit loop, not measured above): {submits} units/s")
    print(
        "  wall: from the engine holding the leader record (or the loop starting) until every agent has its "
        "placements; CPU: cores busy meanwhile (here: this process, the agents' watches included); machine: share "
        "of all cores busy, anyone's work"
    )


def _print_fanout(rounds: dict[str, Round]) -> None:
    print(f"watch events per agent ({AGENTS} agents, each watching schedule/<its machine>/ only), target 0 foreign:")
    for how, r in rounds.items():
        t = r.tally
        print(
            f"  {LABELS[how]:52} per agent {min(t.total)}-{max(t.total)} (total {sum(t.total):,}), "
            f"about other machines: {sum(t.foreign)}"
        )
    print(
        f"  fleet woke every agent on every decision: {AGENTS} x {UNITS:,} = {AGENTS * UNITS:,} deliveries, "
        f"{UNITS:,} per agent"
    )


async def _all(binary: str) -> dict[str, Round]:
    units = [_unit(i) for i in range(UNITS)]
    rounds = {how: await _etcd_round(binary, how, units) for how in ("etcd raw", "etcd raw concurrent")}
    rounds |= {how: await _etcd_round(binary, how, units) for how in ("etcd loop", "etcd engine")}
    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-sqlite-", dir=SCRATCH) as name:
        rounds |= {how: await _sqlite_round(Path(name), how, units) for how in ("sqlite loop", "sqlite engine")}
    return rounds


def main() -> None:
    binary = find_etcd_binary()
    if binary is None:
        print("etcd registry: skipped: no etcd binary (FLEETLET_ETCD_BIN, or etcd on the PATH; `make services`)")
        return
    rounds = anyio.run(_all, binary)
    print(
        f"etcd registry: {UNITS:,} units placed over {AGENTS} agents, end to end (etcd {etcd_version(binary)}, "
        f"one member, data on {SCRATCH or 'disk'}; one round each)"
    )
    _print(rounds)
    _print_fanout(rounds)


if __name__ == "__main__":
    main()
