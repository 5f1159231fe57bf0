"""The event stream's fan-out: 500 websocket subscribers of ``GET /v1/events`` at 1,000 events/s.

Target (issue 5): p99 delivery latency under 100 ms, with the agent's CPU and memory meanwhile.

Workload: an agent process (:mod:`bench.events_server`: ``fleet_v1_app`` over a MemoryRegistry with an EventHub,
on a unix socket) publishes 1,000 ``state`` events a second, 10 every 10 ms on the real clock, each about 550 bytes
with the wall time of publishing in its payload. :data:`CLIENT_PROCESSES` processes
(:mod:`bench.events_subscribers`) share the subscribers, so that no single client process has to keep up with the
whole fan-out; they run niced, since they stand for other machines and must not take the agent's CPU. After a
warm-up, a measured window; then a last event, and every subscriber must have received every published event
exactly once and in order (a subscriber the server drops as too slow fails the run, and is counted).

Delivery latency is the wall time a subscriber got the frame, less the wall time the event was published: the
server's queueing and writes, the kernel, and the subscriber's own reading, whose event loop shares the machine's
two cores with the server's. Every subscriber samples one event in ten.

Baseline, measured in the same run with the same subscribers, rate and events: a bare aiohttp websocket broadcast
(one handler per client, sending whatever pre-encoded events are new at each wake-up as one frame), the floor of
the transport on this machine. One more baseline at the large point sends a frame per event: what the transport's
per-frame cost alone does to the fan-out. Where the time goes: the server's CPU (user and system), how late its
5 ms sleeps wake (a saturated event loop wakes late), how late its publisher's ticks were, the subscriber
processes' CPU, and how busy the whole machine was (other work on it shows as the difference).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from bench.events_protocol import PER_TICK, RATE, TICK, Schedule

TARGET_P99_MS: Final = 100.0
CLIENT_PROCESSES: Final = 4
WARM_UP: Final = 2.0
LEAD: Final = 1.0  # between sending the schedule and the first event: every process has read it by then
DRAIN: Final = 4.0  # after the last event, for a subscriber behind to get it
READY_TIMEOUT: Final = 30.0
CONNECT_TIMEOUT: Final = 60.0
REPORT_TIMEOUT: Final = 30.0
EXIT_TIMEOUT: Final = 10.0
MAX_LINE: Final = 256 * 1024 * 1024
ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Point:
    mode: str  # bench.events_server.MODES
    subscribers: int
    window: float  # measured seconds


LARGE: Final = 500
SMALL: Final = 50
POINTS: Final = (
    Point("baseline", LARGE, 10.0),
    Point("fleetlet", LARGE, 10.0),
    Point("baseline", SMALL, 5.0),
    Point("fleetlet", SMALL, 5.0),
    Point("baseline-per-event", LARGE, 5.0),
)
LABELS: Final = {
    "baseline": "baseline: bare aiohttp broadcast, a frame a wake-up",
    "baseline-per-event": "baseline: the same, a frame per event",
    "fleetlet": "fleetlet: GET /v1/events, fleet_v1_app + EventHub",
}


# --- the processes -----------------------------------------------------------------------------------------------


class _Child:
    """A process of the run, spoken to in JSON lines."""

    def __init__(self, process: Process, name: str) -> None:
        self.process = process
        self.name = name
        assert process.stdout is not None
        self._lines = BufferedByteReceiveStream(process.stdout)

    async def hear(self, within: float) -> dict[str, Any]:
        """The child's next line; RuntimeError when it says nothing ``within`` seconds or exits first."""
        try:
            with anyio.fail_after(within):
                line = await self._lines.receive_until(b"\n", MAX_LINE)
        except TimeoutError:
            raise RuntimeError(f"{self.name} said nothing in {within:.0f} s") from None
        except (anyio.EndOfStream, anyio.IncompleteRead):
            with anyio.move_on_after(EXIT_TIMEOUT):
                await self.process.wait()
            status = self.process.returncode
            raise RuntimeError(f"{self.name} ended its output (exit status {status}; its stderr is above)") from None
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def tell(self, message: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(message + b"\n")


@asynccontextmanager
async def _children() -> AsyncIterator[list[_Child]]:
    """The run's processes, started by the caller; every one killed on the way out, whatever happened."""
    children: list[_Child] = []
    try:
        yield children
    finally:
        with anyio.CancelScope(shield=True):
            for child in children:
                if child.process.returncode is None:
                    child.process.kill()
            for child in children:
                with anyio.move_on_after(EXIT_TIMEOUT):
                    await child.process.aclose()


async def _start(children: list[_Child], name: str, module: str, *args: str) -> _Child:
    command = [sys.executable, "-m", module, *args]
    # stderr is inherited: a child's traceback shows in the bench's output.
    process = await anyio.open_process(command, cwd=ROOT, stderr=None)
    child = _Child(process, name)
    children.append(child)
    return child


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [float(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True, slots=True)
class Outcome:
    point: Point
    schedule: Schedule
    server: dict[str, Any]
    clients: list[dict[str, Any]]
    machine_busy: float  # of all cores, 0..1


async def _run(point: Point, directory: Path) -> Outcome:
    socket = str(directory / f"{point.mode}-{point.subscribers}.sock")
    async with _children() as children:
        server = await _start(children, f"the {point.mode} server", "bench.events_server", point.mode, socket)
        await server.hear(READY_TIMEOUT)
        shares = [
            point.subscribers // CLIENT_PROCESSES + (i < point.subscribers % CLIENT_PROCESSES)
            for i in range(CLIENT_PROCESSES)
        ]
        clients = [
            await _start(children, f"subscriber process {i}", "bench.events_subscribers", socket, str(share))
            for i, share in enumerate(shares)
            if share
        ]
        for client in clients:
            await client.hear(CONNECT_TIMEOUT)
        start = time.time() + LEAD
        end = start + WARM_UP + point.window
        schedule = Schedule(start, start + WARM_UP, end, end + DRAIN)
        for child in children:
            await child.tell(schedule.to_json())
        await anyio.sleep(schedule.measure - time.time())
        busy, total = _cpu_times()
        await anyio.sleep(schedule.end - time.time())
        busy_after, total_after = _cpu_times()
        report = await server.hear(DRAIN + REPORT_TIMEOUT)
        reports = [await client.hear(DRAIN + REPORT_TIMEOUT) for client in clients]
        assert server.process.stdin is not None
        await server.process.stdin.aclose()  # the server shuts down
        with anyio.fail_after(EXIT_TIMEOUT):
            await server.process.wait()
    return Outcome(point, schedule, report, reports, (busy_after - busy) / (total_after - total))


# --- the figures -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    delivered_per_second: float
    dropped: int  # too-slow
    other_errors: int
    incomplete: int  # never got the last event
    wrong: int  # subscribers whose events were not exactly the published ones, once each, in order
    missing: int
    duplicates: int
    server_cpu: float  # percent of one core
    server_user: float
    server_system: float
    rss_mib: float
    peak_rss_mib: float
    loop_lag_p99_ms: float
    tick_late_p99_ms: float
    clients_cpu: float  # percent of one core, all client processes
    machine_busy: float  # percent of the whole machine


def _rank(ordered: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted microseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))] / 1000


def figures(outcome: Outcome) -> Figures:
    server, window = outcome.server, outcome.server["window"]
    subscribers = [s for client in outcome.clients for s in client["subscribers"]]
    samples = sorted(sample for s in subscribers for sample in s["samples"])
    dropped = [s for s in subscribers if "too-slow" in s["errors"]]
    published = (server["first"], server["last"], server["published"])
    # A subscriber that did not get to the end must still have got a prefix of the stream, with nothing missing.
    wrong = sum(
        1
        for s in subscribers
        if s["first"] != server["first"]
        or s["missing"]
        or s["duplicates"]
        or (s["complete"] and (s["first"], s["last"], s["events"]) != published)
    )
    client_seconds = sum(c["cpu"]["user"] + c["cpu"]["system"] for c in outcome.clients)
    client_span = max(c["cpu"]["seconds"] for c in outcome.clients)
    server_cpu = window["cpu_user"] + window["cpu_system"]
    return Figures(
        p50_ms=_rank(samples, 0.50),
        p99_ms=_rank(samples, 0.99),
        max_ms=_rank(samples, 1.0),
        samples=len(samples),
        delivered_per_second=sum(s["in_window"] for s in subscribers) / outcome.point.window,
        dropped=len(dropped),
        other_errors=sum(len(s["errors"]) for s in subscribers) - len(dropped),
        incomplete=sum(not s["complete"] for s in subscribers) - len(dropped),
        wrong=wrong,
        missing=sum(s["missing"] for s in subscribers),
        duplicates=sum(s["duplicates"] for s in subscribers),
        server_cpu=100 * server_cpu / window["seconds"],
        server_user=100 * window["cpu_user"] / window["seconds"],
        server_system=100 * window["cpu_system"] / window["seconds"],
        rss_mib=window["rss_end_mib"],
        peak_rss_mib=window["rss_peak_mib"],
        loop_lag_p99_ms=server["loop_lag_ms"]["p99"],
        tick_late_p99_ms=server["tick_late_ms"]["p99"],
        clients_cpu=100 * client_seconds / client_span,
        machine_busy=100 * outcome.machine_busy,
    )


def _failures(f: Figures) -> str:
    """What went wrong with the stream, or "" when every subscriber got every event once, in order."""
    found = [
        (f.dropped, "dropped as too slow"),
        (f.incomplete, "never got the last event"),
        (f.wrong, f"got other events than published ({f.missing:,} missing, {f.duplicates:,} duplicate or late)"),
        (f.other_errors, "other error frames"),
    ]
    return "; ".join(f"{count} {what}" for count, what in found if count)


def _print(outcome: Outcome, f: Figures, baseline: Figures | None) -> None:
    point = outcome.point
    expected = point.subscribers * RATE
    ratio = ""
    if baseline is not None:
        ratio = (
            f" (p50 {f.p50_ms / baseline.p50_ms:.1f}x, p99 {f.p99_ms / baseline.p99_ms:.1f}x,"
            f" server CPU {f.server_cpu / baseline.server_cpu:.1f}x the baseline's)"
        )
    verdict = ""
    if point.mode == "fleetlet" and point.subscribers == LARGE:
        meets = f.p99_ms < TARGET_P99_MS and not _failures(f)
        verdict = f"; target p99 < {TARGET_P99_MS:.0f} ms: {'meets' if meets else 'MISSES'}"
    failures = _failures(f)
    print(f"    {LABELS[point.mode]}, {point.window:.0f} s measured")
    print(
        f"      latency p50 {f.p50_ms:>7.1f} ms  p99 {f.p99_ms:>7.1f} ms  max {f.max_ms:>7.1f} ms"
        f"  ({f.samples:,} samples){ratio}{verdict}"
    )
    print(
        f"      delivered {f.delivered_per_second:>9,.0f} events/s of {expected:,}; "
        + (f"FAILED: {failures}" if failures else "every subscriber got every event once, in order")
    )
    print(
        f"      server CPU {f.server_cpu:>4.0f}% of a core (user {f.server_user:.0f}%, system {f.server_system:.0f}%),"
        f" RSS {f.rss_mib:.0f} MiB (peak {f.peak_rss_mib:.0f}); its 5 ms sleeps late p99 {f.loop_lag_p99_ms:.1f} ms,"
        f" its publisher's ticks late p99 {f.tick_late_p99_ms:.1f} ms"
    )
    ours = (f.server_cpu + f.clients_cpu) / (os.cpu_count() or 1)
    print(
        f"      subscriber processes' CPU {f.clients_cpu:.0f}% of a core; the machine {f.machine_busy:.0f}% busy"
        f" (this run's processes {ours:.0f}%)"
    )


def main() -> None:
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-events-") as name:
        for point in POINTS:
            outcomes.append(anyio.run(_run, point, Path(name)))
    print(
        f"event stream fan-out: {RATE:,} state events/s ({PER_TICK} every {TICK * 1000:.0f} ms on the real clock),"
        f" websocket subscribers in {CLIENT_PROCESSES} processes, server on a unix socket; {os.cpu_count()} cores;"
        f" {WARM_UP:.0f} s warm-up, then a measured window"
    )
    baselines = {o.point.subscribers: figures(o) for o in outcomes if o.point.mode == "baseline"}
    for subscribers in dict.fromkeys(p.subscribers for p in POINTS):
        print(f"  {subscribers} subscribers:")
        for outcome in outcomes:
            if outcome.point.subscribers != subscribers:
                continue
            baseline = None if outcome.point.mode == "baseline" else baselines.get(subscribers)
            _print(outcome, figures(outcome), baseline)


if __name__ == "__main__":
    main()
