"""``fleetlet list-units`` and ``list-unit-files`` with 10,000 units in the registry, end to end through the CLI.

Target (issue 4): list-units under 150 ms end to end through the CLI's client.

Workload: 10,000 instances of fleet's ``hello_world@.service`` in a SqliteRegistry, the even half launched and
scheduled to one machine of three, each of those reported ``loaded active running``. The API is what the agent
serves (``fleet_v1_app`` on a unix socket, fleet's pages of 100), run in a thread with its own event loop, so that
the CLI runs unchanged in the main thread: ``fleetlet.cli.main.main([...])`` with stdout captured, its own event
loop, client, requests and table. Process start and imports are left out there; one real subprocess invocation is
timed on its own for what a user feels. The same runs against pages of 1,000 show what the number of requests
costs (fleetctl follows ``nextPageToken``, so the page size is the server's choice).

Baseline, measured in the same run against the same server: the same requests made with raw aiohttp GETs and
decoded with orjson, nothing else. It is the floor of the transport, the API's handlers included, so the ratio is
what the client's records and the table add. Runs of the baseline and of the CLI alternate, to share the noise.

Where the time goes: every run meters the wall time of the API's handlers (a middleware) and of its registry calls
(a wrapper; their reads run in worker threads, which cProfile does not see); one run of each command under cProfile,
in both threads, names the functions.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import inspect
import io
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import aiohttp
import anyio
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from anyio.from_thread import BlockingPortal, start_blocking_portal

from bench.corpus import EXAMPLES
from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.api.context import PAGE_SIZE
from fleetlet.cli.main import main as cli_main
from fleetlet.clock import SystemClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import SqliteRegistry
from fleetlet.registry.protocol import Registry
from fleetlet.units.syntax import parse

TARGET_MS: Final = 150.0
UNITS: Final = 10_000
WRITERS: Final = 50
WARM_UP: Final = 1
ROUNDS: Final = 21
MIN_ROUNDS: Final = 5
BUDGET_SECONDS: Final = 20.0  # per command and page size; a slow command gets fewer rounds, never under MIN_ROUNDS
LARGE_PAGE: Final = 1_000
TEMPLATE: Final = EXAMPLES / "hello_world@.service"
MACHINES: Final = (
    MachineSpec("2c9ab7a9e1b94d4c8f3a5e6d7c8b9a01", {"region": "us-east", "disk": "ssd"}, "10.0.0.11"),
    MachineSpec("7f1e0d2c3b4a59687766554433221100", {"region": "us-east", "disk": "hdd"}, "10.0.0.12"),
    MachineSpec("d41d8cd98f00b204e9800998ecf8427e", {"region": "us-west", "disk": "ssd"}, "10.0.0.13"),
)
RUNNING: Final = MACHINES[0]
API: Final = "http://localhost/fleet/v1"


def _name(i: int) -> str:
    return f"hello_world@{i}.service"


async def _fill(db: Path) -> list[UnitState]:
    """Submit every unit, launch and schedule the even ones; the states their machine would report."""
    unit = parse(TEMPLATE.read_text(), TEMPLATE.name)
    per_writer = UNITS // WRITERS
    async with SqliteRegistry(db, SystemClock()) as registry:

        async def writer(w: int) -> None:
            for i in range(w * per_writer, (w + 1) * per_writer):
                await registry.put_unit(_name(i), unit, desired_state="launched" if i % 2 == 0 else "inactive")
                if i % 2 == 0:
                    await registry.set_machine(_name(i), RUNNING.id)

        async with anyio.create_task_group() as tg:
            for w in range(WRITERS):
                tg.start_soon(writer, w)
    return [UnitState(_name(i), unit.hash, RUNNING.id, "loaded", "active", "running") for i in range(0, UNITS, 2)]


# --- metering the server -----------------------------------------------------------------------------------------


@dataclass
class Meter:
    """Wall time in the API's handlers and in each registry method since the last reset.

    Written by the server's thread while a request is handled, read by the main thread between commands, when the
    server is idle.
    """

    handler_seconds: float = 0.0
    requests: int = 0
    registry: dict[str, tuple[int, float]] = field(default_factory=dict)

    def reset(self) -> None:
        self.handler_seconds, self.requests, self.registry = 0.0, 0, {}

    def add_registry_call(self, method: str, seconds: float) -> None:
        calls, total = self.registry.get(method, (0, 0.0))
        self.registry[method] = (calls + 1, total + seconds)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            return await handler(request)
        finally:
            self.handler_seconds += time.perf_counter() - start
            self.requests += 1


class _MeteredRegistry:
    """The registry, its coroutine methods timed into a :class:`Meter`, everything else passed through."""

    def __init__(self, inner: Registry, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def metered(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                self._meter.add_registry_call(name, time.perf_counter() - start)

        return metered


@asynccontextmanager
async def _serving(db: Path, sockets: dict[int, Path], view: StaticView, meter: Meter) -> AsyncIterator[None]:
    """The API over the registry at ``db``, one site per page size, set up as the agent sets up its own."""
    async with SqliteRegistry(db, SystemClock()) as registry:
        metered = cast(Registry, _MeteredRegistry(registry, meter))
        runners: list[web.AppRunner] = []
        try:
            for page_size, socket in sockets.items():
                app = fleet_v1_app(metered, page_size=page_size, view=view)
                app.middlewares.append(meter.middleware)  # innermost: the handler's own time, errors included
                runner = web.AppRunner(app, handle_signals=False, access_log=None)
                runners.append(runner)
                await runner.setup()
                await web.UnixSite(runner, str(socket)).start()
            yield
        finally:
            for runner in runners:
                await runner.cleanup()


# --- the commands and their baselines ----------------------------------------------------------------------------


def _cli(*argv: str) -> str:
    """What ``fleetlet ARGV`` prints, run in this process; the benchmark is void if the command fails."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli_main(list(argv))
    if status != 0:
        raise RuntimeError(f"fleetlet {' '.join(argv)} exited {status}")
    return out.getvalue()


async def _raw(socket: Path, resource: str, key: str) -> tuple[int, int]:
    """(records, requests): every page of ``resource``, then ``/machines``, by plain GETs, orjson-decoded."""
    records, requests, token = 0, 0, ""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(socket))) as session:
        while True:
            params = {"alt": "json", "nextPageToken": token} if token else {"alt": "json"}
            async with session.get(f"{API}/{resource}", params=params) as response:
                page = orjson.loads(await response.read())
            records, requests = records + len(page.get(key, [])), requests + 1
            token = page.get("nextPageToken", "")
            if not token:
                break
        async with session.get(f"{API}/machines", params={"alt": "json"}) as response:
            orjson.loads(await response.read())
    return records, requests + 1


async def _request_floor(socket: Path, requests: int = 200) -> float:
    """Seconds per request of the smallest answer the API has (``/machines``), on one kept-alive connection."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(socket))) as session:

        async def get() -> None:
            async with session.get(f"{API}/machines", params={"alt": "json"}) as response:
                orjson.loads(await response.read())

        await get()
        start = time.perf_counter()
        for _ in range(requests):
            await get()
        return (time.perf_counter() - start) / requests


@dataclass(frozen=True, slots=True)
class Command:
    """A CLI command; its baseline makes the same requests raw (both commands ask for ``/machines`` too: for
    MACHINE's IPs, and for TARGET's since some units are scheduled)."""

    label: str
    rows: int
    resource: str
    key: str

    def run(self, socket: Path) -> None:
        lines = _cli(self.label, "--endpoint", f"unix://{socket}").count("\n")
        if lines != self.rows + 1:  # the legend
            raise RuntimeError(f"fleetlet {self.label} printed {lines} lines, expected {self.rows + 1}")

    def baseline(self, socket: Path) -> int:
        """Requests made."""
        records, requests = anyio.run(_raw, socket, self.resource, self.key)
        if records != self.rows:
            raise RuntimeError(f"raw GETs of /{self.resource} found {records} records, expected {self.rows}")
        return requests


LIST_UNITS: Final = Command("list-units", UNITS // 2, "state", "states")
LIST_UNIT_FILES: Final = Command("list-unit-files", UNITS, "units", "units")


# --- timing ------------------------------------------------------------------------------------------------------


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _p90_ms(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=10, method="inclusive")[-1] * 1000


@dataclass(frozen=True, slots=True)
class Comparison:
    """Runs of one command against one page size, in seconds; the API's metered time during each CLI run."""

    command: Command
    page_size: int
    requests: int
    baseline: list[float]
    cli: list[float]
    handlers: list[float]
    registry: dict[str, tuple[int, list[float]]]  # method -> (calls a run, seconds of each run)


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _compare(command: Command, socket: Path, page_size: int, meter: Meter) -> Comparison:
    """Alternating runs of the baseline and the CLI after a warm-up of each; ROUNDS of them, or as many as fit in
    BUDGET_SECONDS but at least MIN_ROUNDS."""
    for _ in range(WARM_UP):
        requests = command.baseline(socket)
        command.run(socket)
    baseline: list[float] = []
    cli: list[float] = []
    handlers: list[float] = []
    registry: dict[str, tuple[int, list[float]]] = {}
    deadline = time.perf_counter() + BUDGET_SECONDS
    while len(cli) < MIN_ROUNDS or (len(cli) < ROUNDS and time.perf_counter() < deadline):
        baseline.append(_timed(lambda: command.baseline(socket)))
        meter.reset()
        cli.append(_timed(lambda: command.run(socket)))
        handlers.append(meter.handler_seconds)
        for method, (calls, seconds) in meter.registry.items():
            registry.setdefault(method, (calls, []))[1].append(seconds)
    return Comparison(command, page_size, requests, baseline, cli, handlers, registry)


def _subprocess(*argv: str) -> float:
    """Wall time of one ``python -m fleetlet ARGV``, after one untimed invocation warms the disk cache."""
    command = [sys.executable, "-m", "fleetlet", *argv]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.PIPE)
    return time.perf_counter() - start


# --- profiling ---------------------------------------------------------------------------------------------------

# (thread, label, file suffix, function, only when called by this function or None). A function the code no longer
# has is left out of the report.
_SPOTS: Final = (
    ("server", "aiohttp: read request, run handler, write", "aiohttp/web_protocol.py", "_handle_request", None),
    ("server", "GET /state handler", "fleetlet/api/state.py", "list_states", None),
    ("server", "GET /units handler", "fleetlet/api/units.py", "list", None),
    ("server", "  state_index: every state, every page", "fleetlet/api/wire.py", "state_index", None),
    ("server", "  unit_json", "fleetlet/api/wire.py", "unit_json", None),
    ("server", "    parse: the unit's text", "fleetlet/units/syntax.py", "parse", None),
    ("server", "  orjson.dumps", "~", "<built-in method orjson.dumps>", None),
    ("client", "argparse: building the parser", "fleetlet/cli/main.py", "_parser", None),
    ("client", "Client.states", "fleetlet/client/client.py", "states", None),
    ("client", "Client.units", "fleetlet/client/client.py", "units", None),
    ("client", "  orjson.loads", "~", "<built-in method orjson.loads>", None),
    ("client", "  decode_unit_state: JSON to record", "fleetlet/client/records.py", "decode_unit_state", None),
    ("client", "  decode_unit: JSON to record", "fleetlet/client/records.py", "decode_unit", None),
    ("client", "Unit.is_global", "fleetlet/client/records.py", "is_global", None),
    ("client", "Unit.unit_file: from_options", "fleetlet/client/records.py", "unit_file", None),
    ("client", "Unit.hash: unit_file, serialize, SHA1", "fleetlet/client/records.py", "hash", None),
    ("client", "print_rows", "fleetlet/cli/columns.py", "print_rows", None),
    ("client", "  format_table", "fleetlet/cli/tabwriter.py", "format_table", None),
)


@dataclass(frozen=True, slots=True)
class Spot:
    thread: str
    label: str
    calls: int
    seconds: float


def _spots(client: cProfile.Profile, server: cProfile.Profile) -> list[Spot]:
    """Cumulative time in each spot the profiles saw; a coroutine counts a call each time it resumes."""
    stats = {"client": pstats.Stats(client).stats, "server": pstats.Stats(server).stats}  # type: ignore[attr-defined]
    found = []
    for thread, label, suffix, function, caller in _SPOTS:
        calls, seconds = 0, 0.0
        for (path, _, name), (_, total_calls, _, cumulative, callers) in stats[thread].items():
            if name != function or not path.endswith(suffix):
                continue
            if caller is None:
                calls, seconds = calls + total_calls, seconds + cumulative
                continue
            for (_, _, caller_name), (_, caller_calls, _, caller_cumulative) in callers.items():
                if caller_name == caller:
                    calls, seconds = calls + caller_calls, seconds + caller_cumulative
        if calls:
            found.append(Spot(thread, label, calls, seconds))
    return found


def _profile(portal: BlockingPortal, command: Command, socket: Path) -> tuple[float, list[Spot]]:
    """One run of ``command`` with this thread (the CLI) and the server's event loop thread both profiled."""
    client, server = cProfile.Profile(), cProfile.Profile()
    portal.call(server.enable)
    client.enable()
    try:
        elapsed = _timed(lambda: command.run(socket))
    finally:
        client.disable()
        portal.call(server.disable)
    return elapsed, _spots(client, server)


# --- the report --------------------------------------------------------------------------------------------------


def _print_comparison(c: Comparison) -> None:
    base, cli = _median_ms(c.baseline), _median_ms(c.cli)
    print(
        f"    baseline  {c.requests:>3} raw GETs of /{c.command.resource} + /machines, orjson  "
        f"median {base:>7.1f} ms  p90 {_p90_ms(c.baseline):>7.1f} ms  ({base / c.requests:.2f} ms a request)"
    )
    verdict = ""
    if c.command is LIST_UNITS:
        verdict = f"; target < {TARGET_MS:.0f} ms: {'meets' if cli < TARGET_MS else 'MISSES'}"
    print(
        f"    fleetlet  {c.command.label:<44} median {cli:>7.1f} ms  p90 {_p90_ms(c.cli):>7.1f} ms  "
        f"({cli / base:.1f}x baseline{verdict}; {len(c.cli)} runs)"
    )
    calls = ", ".join(
        f"{n} {method}() {_median_ms(runs):.1f} ms"
        for method, (n, runs) in sorted(c.registry.items(), key=lambda item: -statistics.median(item[1][1]))
    )
    calls = calls or "none"
    print(f"      of which in the API's handlers {_median_ms(c.handlers):.1f} ms; in its registry calls: {calls}")


def _print_spots(label: str, elapsed: float, spots: list[Spot]) -> None:
    print(f"    {label}, pages of {PAGE_SIZE}: {elapsed * 1000:.0f} ms profiled")
    for spot in spots:
        print(f"      {spot.thread}  {spot.label:<42} {spot.calls:>7,} calls  {spot.seconds * 1000:>7.1f} ms")


def main() -> None:
    meter = Meter()
    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-") as name:
        directory = Path(name)
        db = directory / "registry.db"
        states = anyio.run(_fill, db)
        view = StaticView(list(MACHINES), states)
        sockets = {PAGE_SIZE: directory / "api.sock", LARGE_PAGE: directory / f"api-{LARGE_PAGE}.sock"}
        fleet_pages = sockets[PAGE_SIZE]
        with start_blocking_portal() as portal, portal.wrap_async_context_manager(_serving(db, sockets, view, meter)):
            floor = anyio.run(_request_floor, fleet_pages)
            comparisons = [
                _compare(command, socket, page_size, meter)
                for page_size, socket in sockets.items()
                for command in (LIST_UNITS, LIST_UNIT_FILES)
            ]
            process = _subprocess("list-units", "--endpoint", f"unix://{fleet_pages}")
            startup = _subprocess("--version")
            profiles = [(c.label, *_profile(portal, c, fleet_pages)) for c in (LIST_UNITS, LIST_UNIT_FILES)]

    options = len(parse(TEMPLATE.read_text()).options)
    print(
        f"list-units, list-unit-files: {UNITS:,} {TEMPLATE.name} instances ({options} options each), "
        f"{UNITS // 2:,} running on one machine of {len(MACHINES)}"
    )
    print("  the API in a thread of this process, on a unix socket; the CLI's own code in process, stdout captured")
    print(f"  a request's floor: GET /machines on a kept-alive connection, raw   {floor * 1000:.2f} ms")
    for page_size in sockets:
        whose = " (fleet's)" if page_size == PAGE_SIZE else ""
        print(f"  API pages of {page_size:,}{whose}:")
        for c in comparisons:
            if c.page_size == page_size:
                _print_comparison(c)
    print(f"  one `python -m fleetlet list-units` process, pages of {PAGE_SIZE}: {process * 1000:.0f} ms")
    print(f"    of which process start and imports (`python -m fleetlet --version`): {startup * 1000:.0f} ms")
    print("  where the time goes: one run of each under cProfile (it slows Python ~2x: compare within a run;")
    print("  the registry's reads run in worker threads, which it does not see: see the metered calls above)")
    for label, elapsed, spots in profiles:
        _print_spots(label, elapsed, spots)


if __name__ == "__main__":
    main()
