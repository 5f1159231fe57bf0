"""Unit actors: 50 concurrent starts on the real Docker engine against plain aiodocker, and the memory an idle
actor holds.

Targets (from the issue): 50 units started concurrently through their actors reach ``active running`` in at most
1.15x the time plain aiodocker takes to create and start the same 50 containers; an idle actor of a running unit
holds at most 30 KiB of Python heap. Both figures come with a baseline measured in the same run: the engine's
speed drifts between runs (it uses the vfs storage driver here, so every create copies the image), and the unit
model's own size is not the actor's doing. The actors are wired as an agent wires them: their containers' deaths
come from one shared event subscription (:class:`~fleetlet.exec.engine_events.EngineEvents`), not a wait call each.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import anyio

from fleetlet.agent.node import Node
from fleetlet.clock import Clock, ManualClock, SystemClock
from fleetlet.exec.docker_runtime import DockerRuntime, docker_host
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.fake_runtime import FakeRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, ContainerRuntime, NoSuchContainer
from fleetlet.exec.subprocess_runner import FakeProcessRunner, ProcessRunner, SubprocessRunner
from fleetlet.service.actor import Mailbox, Start, UnitActor
from fleetlet.service.journal import FileJournal, Journal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import CheckedUnit, load_unit
from fleetlet.units.specifiers import MachineFacts

TARGET_START_RATIO = 1.15
TARGET_KIB_PER_ACTOR = 30
STARTS = 50
ROUNDS = 4  # an even number: each side goes first in half the rounds
WARM_UP = 10  # containers started untimed before the first round
IDLE_ACTORS = 1000

# Every container the benchmark makes, on either side, carries this label with the run's id: the cleanup removes
# them all by it, whatever happened.
BENCH_LABEL = "fleetlet.bench"
IMAGE = "busybox"
COMMAND = ("sleep", "3600")

# No network on either side: attaching to a bridge costs both the same, would only dilute the ratio, and fails on an
# engine whose docker0 another engine on the host removed.
_START_UNIT = """\
[Unit]
Description=Benchmark container {index}

[Service]
Type=simple
ExecStart=/usr/bin/docker run --rm --name {name} --network none --label {label}={run} {image} {command}
"""

# What an idle actor runs in production: fleet's hello_world template, one instance per actor.
_IDLE_TEMPLATE = (Path(__file__).resolve().parent.parent / "configs" / "units" / "hello_world@.service").read_text()


# --- one actor, wired as an agent wires it --------------------------------------------------------------------


def _actor(
    unit: CheckedUnit,
    *,
    runtime: ContainerRuntime,
    processes: ProcessRunner,
    clock: Clock,
    journal: Journal,
    machine_id: str,
    events: EngineEvents,
) -> UnitActor:
    """A UnitActor over an Executor for ``unit``, its container's death from the shared ``events``; run it with
    ``await tg.start(actor.run)``."""
    return Node(runtime, processes, clock, MachineFacts(machine_id=machine_id), events).actor(unit, journal)


async def _start_all(mailboxes: list[Mailbox], *, within: float) -> tuple[float, list[UnitStatus]]:
    """Send every mailbox a Start at once; the seconds until the last reply, and the replies."""
    starts = [Start() for _ in mailboxes]
    began = time.perf_counter()
    for mailbox, start in zip(mailboxes, starts, strict=True):
        await mailbox.send(start)
    with anyio.fail_after(within):
        statuses = [await start.reply.wait() for start in starts]
    return time.perf_counter() - began, statuses


def _require_running(statuses: list[UnitStatus]) -> None:
    wrong = [status for status in statuses if (status.active, status.sub) != ("active", "running")]
    if wrong:
        raise RuntimeError(f"{len(wrong)} of {len(statuses)} units did not start: {wrong[0].name}: {wrong[0]}")


# --- 1. concurrent starts on the engine ------------------------------------------------------------------------


async def _fleetlet_round(runtime: DockerRuntime, run: str, round_no: int, journals: Path) -> float:
    """Seconds from sending 50 Starts until all 50 actors report ``active running``."""
    clock = SystemClock()
    processes = SubprocessRunner()
    command = " ".join(COMMAND)
    units = [
        load_unit(
            _START_UNIT.format(
                index=i,
                name=f"fleetlet-bench-{run}-{round_no}-{i}",
                label=BENCH_LABEL,
                run=run,
                image=IMAGE,
                command=command,
            ),
            f"bench-{i}.service",
        )
        for i in range(STARTS)
    ]
    journals_open: list[Journal] = []
    async with anyio.create_task_group() as agent:
        events = EngineEvents(runtime, clock)  # one subscription for all the actors, as an agent has
        await agent.start(events.run)
        async with anyio.create_task_group() as tg:
            mailboxes: list[Mailbox] = []
            for unit in units:
                journal = FileJournal(journals / f"round-{round_no}", unit.name.full, clock)
                journals_open.append(journal)
                actor = _actor(
                    unit,
                    runtime=runtime,
                    processes=processes,
                    clock=clock,
                    journal=journal,
                    machine_id=run,
                    events=events,
                )
                mailboxes.append(await tg.start(actor.run))
            try:
                elapsed, statuses = await _start_all(mailboxes, within=600)
            finally:
                for mailbox in mailboxes:  # detach: the containers keep running and are removed by label afterwards
                    await mailbox.aclose()
        agent.cancel_scope.cancel()  # the actors have detached: their event subscription goes too
    for opened in journals_open:
        opened.close()
    _require_running(statuses)
    return elapsed


async def _raw_round(docker: aiodocker.Docker, run: str, round_no: int, *, count: int = STARTS) -> float:
    """Seconds to create and start the same 50 containers with plain aiodocker, all at once."""
    config: dict[str, Any] = {
        "Image": IMAGE,
        "Cmd": list(COMMAND),
        "Labels": {BENCH_LABEL: run},
        "HostConfig": {"NetworkMode": "none"},
    }

    async def one(i: int) -> None:
        container = await docker.containers.create(config, name=f"raw-bench-{run}-{round_no}-{i}")
        await container.start()

    began = time.perf_counter()
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
    return time.perf_counter() - began


async def _remove_labelled(url: str, run: str) -> int:
    """Remove every container of this run, from either side; shielded so that a failed run cleans up too."""
    with anyio.fail_after(300, shield=True):
        async with DockerRuntime(url) as cleaner:
            found = await cleaner.list({BENCH_LABEL: run}) + await cleaner.list({LABEL_MACHINE: run})
            ids = {state.id for state in found}

            async def remove(container: str) -> None:
                try:
                    await cleaner.remove(container, force=True, volumes=True)
                except NoSuchContainer:
                    pass

            async with anyio.create_task_group() as tg:
                for container in ids:
                    tg.start_soon(remove, container)
    return len(ids)


@dataclass
class Starts:
    """Seconds per round on each side, in round order, and the engine's storage driver."""

    fleetlet: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    driver: str = "?"

    @property
    def ratio(self) -> float:
        return statistics.median(self.fleetlet) / statistics.median(self.raw)

    @property
    def round_ratios(self) -> list[float]:
        return [f / r for f, r in zip(self.fleetlet, self.raw, strict=True)]


async def _warm_up(docker: aiodocker.Docker, url: str, run: str) -> None:
    """A few containers created, started and removed untimed, so that the first timed side finds no cold engine."""
    try:
        await _raw_round(docker, run, -1, count=WARM_UP)
    finally:
        await _remove_labelled(url, run)


async def _concurrent_starts() -> Starts:
    url = docker_host()
    run = uuid.uuid4().hex[:8]
    result = Starts()
    try:
        with tempfile.TemporaryDirectory(prefix="fleetlet-bench-") as journals:
            async with DockerRuntime(url) as runtime, aiodocker.Docker(url=url) as docker:
                await runtime.ping()  # both clients negotiate the API version before the clock starts
                result.driver = str((await docker.system.info()).get("Driver", "?"))
                await _warm_up(docker, url, run)
                sides: list[tuple[list[float], Callable[[int], Awaitable[float]]]] = [
                    (result.fleetlet, lambda r: _fleetlet_round(runtime, run, r, Path(journals))),
                    (result.raw, lambda r: _raw_round(docker, run, r)),
                ]
                for round_no in range(ROUNDS):
                    # Alternate which side goes first, so that neither always meets the engine in the same state.
                    for times, measure in sides if round_no % 2 == 0 else sides[::-1]:
                        times.append(await measure(round_no))
                        await _remove_labelled(url, run)
    finally:
        await _remove_labelled(url, run)
    return result


# --- 2. memory of an idle actor --------------------------------------------------------------------------------


@contextmanager
def _traced() -> Iterator[list[tracemalloc.Snapshot]]:
    """Snapshots before and after the block, taken after a full collection; the pair is filled in on exit."""
    pair: list[tracemalloc.Snapshot] = []
    gc.collect()
    pair.append(tracemalloc.take_snapshot())
    yield pair
    gc.collect()
    pair.append(tracemalloc.take_snapshot())


def _grown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, *, excluding: str | None = None) -> int:
    if excluding is not None:
        rule = [tracemalloc.Filter(False, excluding)]
        before, after = before.filter_traces(rule), after.filter_traces(rule)
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


# Each idle actor has what production gives a unit: its own parsed unit (distinct instance names) and its own
# FileJournal on disk (MemoryJournal is for tests). Only the engine is the fake, whose records are counted apart.
def _idle_units() -> list[CheckedUnit]:
    return [load_unit(_IDLE_TEMPLATE, f"hello_world@{i}.service") for i in range(IDLE_ACTORS)]


@dataclass
class IdleMemory:
    """KiB of Python heap per idle actor, and where it went."""

    unit: float  # a parsed unit alone
    total: float  # a running actor with its unit, executor, journal and tasks; the fake engine's records excluded
    fake: float  # the fake engine's own records of the actor's container and calls (dockerd's, in production)
    tasks: float  # asyncio tasks per actor
    top: list[tuple[str, float]]  # KiB per actor by file, largest first


async def _idle_actors(journals: Path) -> tuple[tracemalloc.Snapshot, tracemalloc.Snapshot, float]:
    """Snapshots before creating 1,000 actors and once all of them are ``active running``; tasks per actor."""
    clock = ManualClock()
    runtime = FakeRuntime(clock)
    processes = FakeProcessRunner(clock=clock)
    journals_open: list[Journal] = []
    async with anyio.create_task_group() as agent:
        # The agent's one subscription, started untraced: what it keeps per actor (a watcher) is traced below.
        events = EngineEvents(runtime, clock)
        await agent.start(events.run)
        async with anyio.create_task_group() as tg:
            tasks_before = len(asyncio.all_tasks())
            with _traced() as pair:
                mailboxes: list[Mailbox] = []
                for unit in _idle_units():
                    journal = FileJournal(journals, unit.name.full, clock)
                    journals_open.append(journal)
                    actor = _actor(
                        unit,
                        runtime=runtime,
                        processes=processes,
                        clock=clock,
                        journal=journal,
                        machine_id="bench",
                        events=events,
                    )
                    mailboxes.append(await tg.start(actor.run))
                # Slow for the fake rather than the actors: each container start wakes every waiter on the fake.
                _, statuses = await _start_all(mailboxes, within=600)
                _require_running(statuses)
                del statuses
                await clock.settle()  # every actor waits on its container; every executor follows its output
            tasks = (len(asyncio.all_tasks()) - tasks_before) / IDLE_ACTORS
            for mailbox in mailboxes:
                await mailbox.aclose()
        agent.cancel_scope.cancel()  # the actors have detached: their event subscription goes too
    for opened in journals_open:
        opened.close()
    before, after = pair
    return before, after, tasks


def _idle_memory(journals: Path) -> IdleMemory:
    per_actor = IDLE_ACTORS * 1024
    tracemalloc.start()
    try:
        with _traced() as pair:
            units = _idle_units()
        unit = _grown(*pair) / per_actor
        del units, pair
        before, after, tasks = anyio.run(_idle_actors, journals)
    finally:
        tracemalloc.stop()
    everything = _grown(before, after)
    fake = everything - _grown(before, after, excluding="*/fleetlet/exec/fake_runtime.py")
    top = [(_where(stat), stat.size_diff / per_actor) for stat in after.compare_to(before, "filename")[:6]]
    return IdleMemory(unit, (everything - fake) / per_actor, fake / per_actor, tasks, top)


def _where(stat: tracemalloc.StatisticDiff) -> str:
    """A file as a reader knows it: from the package down, without the installation's prefix."""
    parts = Path(stat.traceback[0].filename).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return "/".join(parts[parts.index("fleetlet") :] if "fleetlet" in parts else parts[-2:])


def main() -> None:
    starts = anyio.run(_concurrent_starts)
    ratio = starts.ratio
    verdict = "meets" if ratio <= TARGET_START_RATIO else "MISSES"
    spread = f"{min(starts.round_ratios):.2f}-{max(starts.round_ratios):.2f}x"
    print(
        f"unit actors: {STARTS} concurrent starts of `{IMAGE} {' '.join(COMMAND)}` on the Docker engine "
        f"({starts.driver}, no network), median of {ROUNDS} rounds, sides alternating"
    )
    print(f"  baseline  aiodocker create + start        {statistics.median(starts.raw):>10.2f} s")
    print(
        f"  fleetlet  Start -> active running         {statistics.median(starts.fleetlet):>10.2f} s"
        f"  ({ratio:.2f}x baseline, rounds {spread}; target <= {TARGET_START_RATIO}: {verdict})"
    )

    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-") as journals:
        memory = _idle_memory(Path(journals))
    verdict = "meets" if memory.total <= TARGET_KIB_PER_ACTOR else "MISSES"
    print(f"unit actors: {IDLE_ACTORS:,} idle actors of running units (fake engine, a file journal each), Python heap")
    print(f"  baseline  parsed unit alone (load_unit)   {memory.unit:>10.1f} KiB each")
    print(
        f"  fleetlet  running actor, unit included    {memory.total:>10.1f} KiB each"
        f"  (actor overhead {memory.total - memory.unit:.1f} KiB; target <= {TARGET_KIB_PER_ACTOR}: {verdict})"
    )
    print(
        f"            {memory.tasks:.0f} asyncio tasks per actor; not counted: the fake engine's records,"
        f" {memory.fake:.1f} KiB each"
    )
    print("  largest growth by file (the fake engine's included):")
    for where, kib in memory.top:
        print(f"    {kib:>5.1f} KiB each  {where}")


if __name__ == "__main__":
    main()
