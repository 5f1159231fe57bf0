"""Gossip: 100 members in one process over real loopback websockets; how fast a change spreads and a stop is seen.

Targets (issue 6): a metadata change on one member is seen by all within 1 s (p50/p99 over every member and
several changes, also in gossip rounds); a stopped member is declared dead by all within 3 s. Then the idle cost
of a member: CPU and memory per member of a 20-member cluster at rest.

Every member is a real :class:`~fleetlet.cluster.gossiper.Gossiper` with its own aiohttp server on 127.0.0.1, its
own websocket dialer, and the default settings (0.2 s rounds, fanout 3); all of them share this one process and
its one core, which a real cluster would not: the figures are an upper bound on what one machine of a real cluster
sees. Baseline, in the same run: the same number of aiohttp servers and sessions with nothing to do, whose CPU and
memory are subtracted from the idle cost, so that the figure is the gossip's own.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
from aiohttp import web

from fleetlet.clock import SystemClock
from fleetlet.cluster.gossiper import Gossiper, GossipSettings
from fleetlet.cluster.membership import MembershipEvent
from fleetlet.cluster.records import MachineRecord
from fleetlet.cluster.websocket import GossipEndpoint, WebSocketDialer

MEMBERS = int(os.environ.get("GOSSIP_MEMBERS", "100"))
IDLE_MEMBERS = 20
CHANGES = 5
IDLE_SECONDS = 10.0
# Seconds between the full view and the first change: GOSSIP_SETTLE=120 measures a cluster long past its start.
SETTLE = float(os.environ.get("GOSSIP_SETTLE", "3"))
SETTINGS = GossipSettings(
    interval=float(os.environ.get("GOSSIP_INTERVAL", "0.2")), fanout=int(os.environ.get("GOSSIP_FANOUT", "3"))
)


@dataclass
class Member:
    gossiper: Gossiper
    runner: web.AppRunner
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (event type, member) -> first seen


@asynccontextmanager
async def members(count: int, stack: AsyncExitStack) -> AsyncIterator[list[Member]]:
    result: list[Member] = []
    clock = SystemClock()
    for i in range(count):
        machine_id = f"{i:032x}"
        dialer = WebSocketDialer(None)
        stack.push_async_callback(dialer.aclose)
        seen: dict[tuple[str, str], float] = {}

        def record(event: MembershipEvent, seen: dict[tuple[str, str], float] = seen) -> None:
            seen.setdefault((event.type, event.member), time.perf_counter())

        seeds = (result[0].gossiper.record.address,) if result else ()
        gossiper = Gossiper(MachineRecord(machine_id, ""), dialer, clock, settings=SETTINGS, seeds=seeds,
                            on_event=record)  # fmt: skip
        endpoint = GossipEndpoint(gossiper, None)
        app = web.Application()
        app.add_routes(endpoint.routes())
        app.on_shutdown.append(endpoint.close)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stack.push_async_callback(runner.cleanup)
        gossiper.set_record(MachineRecord(machine_id, f"http://127.0.0.1:{runner.addresses[0][1]}"))
        member = Member(gossiper, runner, seen=seen)
        result.append(member)
    yield result


async def run_all(tg: anyio.abc.TaskGroup, group: list[Member]) -> None:
    """Start every member at once, as a cluster booting: each finds the others through its seed, the first."""
    for member in group:

        async def run(member: Member = member) -> None:
            with member.scope:
                await member.gossiper.run()

        tg.start_soon(run)


async def until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``condition`` holds, checked every 10 ms (a benchmark may poll; a test may not)."""
    start = time.perf_counter()
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 -- a benchmark may poll its conditions; tests may not
            await anyio.sleep(0.01)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def spread_and_detect(count: int) -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        group = await stack.enter_async_context(members(count, stack))
        await run_all(tg, group)
        converged = await until(lambda: all(len(m.gossiper.placeable()) == count for m in group), 60)
        busy, measuring = _cpu(), time.perf_counter()
        collecting = _GCTime()
        print(f"gossip: {count} members in one process, real loopback websockets, {SETTINGS.interval:g} s rounds,"
              f" fanout {SETTINGS.fanout}")  # fmt: skip
        print(f"  full view everywhere, all started at once: {converged:.2f} s")
        await anyio.sleep(SETTLE)  # the detectors learn the heartbeats' pace (and, for longer, links rotate)
        delays: list[float] = []
        for change in range(CHANGES):
            source = group[(change * 37 + 11) % count]
            record = source.gossiper.record
            start = time.perf_counter()
            source.gossiper.set_record(MachineRecord(record.id, record.address, metadata={"change": str(change)}))
            others = [m for m in group if m is not source]
            key = ("metadata-changed", record.id)
            try:
                await until(lambda key=key, others=others: all(key in m.seen for m in others), 10)  # type: ignore[misc]
            except TimeoutError:
                missed = sum(1 for m in others if key not in m.seen)
                print(f"  metadata change {change}: {missed} of {len(others)} members had not seen it after 10 s")
            delays.extend(m.seen.pop(key) - start for m in others if key in m.seen)
            await anyio.sleep(0.5)
        p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
        rounds = SETTINGS.interval
        print(f"  metadata change seen by all {count - 1} others ({CHANGES} changes): p50 {p50 * 1000:.0f} ms"
              f" ({p50 / rounds:.1f} rounds), p99 {p99 * 1000:.0f} ms ({p99 / rounds:.1f} rounds),"
              f" max {max(delays) * 1000:.0f} ms  [target: all within 1 s]")  # fmt: skip
        wall = time.perf_counter() - measuring
        print(f"  the process meanwhile: {(_cpu() - busy) / wall * 100:.0f}% of a core, of which the garbage collector"
              f" {collecting.stop() / wall * 100:.0f}% (it scans all {count} members' heaps)")  # fmt: skip
        false_suspicions = sum(1 for m in group for (kind, _) in m.seen if kind == "suspect")
        victim = group[count // 2]
        victim_id = victim.gossiper.id
        stopped = time.perf_counter()
        victim.scope.cancel()
        await victim.runner.cleanup()  # its port closes: as a kill, no goodbye
        survivors = [m for m in group if m is not victim]
        try:
            await until(lambda: all(("dead", victim_id) in m.seen for m in survivors), 15)
        except TimeoutError:
            missed = sum(1 for m in survivors if ("dead", victim_id) not in m.seen)
            print(f"  {missed} of {len(survivors)} members had not declared the stopped member dead after 15 s")
        dead = [m.seen[("dead", victim_id)] - stopped for m in survivors if ("dead", victim_id) in m.seen]
        print(f"  stopped member declared dead by all {len(survivors)}: p50 {statistics.median(dead):.2f} s,"
              f" last {max(dead):.2f} s  [target: all within 3 s];"
              f" suspicions of live members before: {false_suspicions}")  # fmt: skip
        tg.cancel_scope.cancel()


async def idle_cost() -> None:
    async def measure(gossip: bool) -> tuple[float, float]:
        gc.collect()
        tracemalloc.start()  # the Python heap, exactly: RSS hides what the allocator reuses between the two runs
        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            group = await stack.enter_async_context(members(IDLE_MEMBERS, stack))
            if gossip:
                await run_all(tg, group)
                await until(lambda: all(len(m.gossiper.placeable()) == IDLE_MEMBERS for m in group), 30)
            await anyio.sleep(2)
            cpu_before, wall_before = _cpu(), time.perf_counter()
            await anyio.sleep(IDLE_SECONDS)
            cpu = (_cpu() - cpu_before) / (time.perf_counter() - wall_before)
            rss = tracemalloc.get_traced_memory()[0] / 1024  # KiB, while the members still run
            tracemalloc.stop()
            tg.cancel_scope.cancel()
        return cpu, rss

    base_cpu, base_rss = await measure(gossip=False)
    cpu, rss = await measure(gossip=True)
    per_cpu = (cpu - base_cpu) / IDLE_MEMBERS * 100
    per_rss = (rss - base_rss) / IDLE_MEMBERS
    print(f"gossip idle cost: {IDLE_MEMBERS} members at rest, {IDLE_SECONDS:g} s: {per_cpu:.2f}% of a core and"
          f" {per_rss:.0f} KiB of Python heap per member beyond the baseline (all: {cpu * 100:.1f}% and"
          f" {rss / 1024:.1f} MiB;"
          f" baseline, {IDLE_MEMBERS} idle servers and sessions: {base_cpu * 100:.1f}%,"
          f" {base_rss / 1024:.1f} MiB)")  # fmt: skip


class _GCTime:
    """Seconds the garbage collector runs, from now until :meth:`stop`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def stop(self) -> float:
        gc.callbacks.remove(self._note)
        return self.seconds


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    for count in sorted({50, MEMBERS}):
        anyio.run(spread_and_detect, count)
    anyio.run(idle_cost)


if __name__ == "__main__":
    main()
