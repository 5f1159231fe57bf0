"""The client's waits (``start(name, wait=True, timeout=...)`` and the others), its typed refusals (UnitNotFound,
InvalidUnit), ``cat``, ``explain`` and ``unit_files``, against the real API on a unix socket over a MemoryRegistry.

What the machines report is a StaticView the test changes between polls: the client's clock is a scripted one
whose every sleep moves virtual time on by what was asked and applies the test's next change. Nothing sleeps.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

import fleetlet
from fleetlet.api import StaticView, UnitState, fleet_v1_app
from fleetlet.client import (
    APIRequestFailed,
    Client,
    ClientError,
    Explanation,
    InvalidUnit,
    UnitFailed,
    UnitGone,
    UnitNotFound,
    UnitProgress,
    UnitReport,
    UnitUnplaceable,
    WaitFailed,
    WaitTimedOut,
)
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.registry.model import DesiredState
from fleetlet.service.states import UnitStatus
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.syntax import parse

pytestmark = pytest.mark.anyio

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ON_A = "1a2b3c4d.../192.0.2.7"
HELLO = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/usr/bin/docker run --rm busybox true\n"
HELLO_HASH = parse(HELLO, "hello.service").hash
PICKY = HELLO + "\n[X-Fleet]\nMachineMetadata=disk=ssd\n"
GLOBAL = HELLO + "\n[X-Fleet]\nGlobal=true\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Change = Callable[[], Awaitable[object] | None]


class Machines:
    """The client's clock: each sleep moves virtual time on and applies the next change to what machines report."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.now = 0.0
        self.slept: list[float] = []

    def then(self, *changes: Change) -> Machines:
        self.changes.extend(changes)
        return self

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.changes:
            done = self.changes.pop(0)()
            if inspect.isawaitable(done):  # a change to the registry
                await done


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    async with MemoryRegistry(ManualClock()) as registry:
        yield registry


@pytest.fixture
def view() -> StaticView:
    return StaticView([MachineSpec(A, {}, "192.0.2.7"), MachineSpec(B)], [])


@pytest.fixture
def machines() -> Machines:
    return Machines()


@pytest.fixture
async def fleet(
    registry: MemoryRegistry, view: StaticView, machines: Machines, tmp_path: Path
) -> AsyncIterator[Client]:
    runner = web.AppRunner(fleet_v1_app(registry, view=view))
    await runner.setup()
    try:
        await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
        async with Client(f"unix://{tmp_path / 'api.sock'}", clock=machines) as fleet:
            yield fleet
    finally:
        await runner.cleanup()


async def submitted(
    registry: MemoryRegistry, name: str, text: str = HELLO, desired: DesiredState = "inactive", machine: str | None = A
) -> None:
    await registry.put_unit(name, parse(text, name), desired_state=desired)
    if machine is not None:
        await registry.set_machine(name, machine)


def report(view: StaticView, active: str, sub: str, name: str = "hello.service", unit_hash: str = HELLO_HASH) -> None:
    """What machine A reports of ``name`` from now on."""
    view.state_list[:] = [s for s in view.state_list if s.name != name]
    view.state_list.append(UnitState(name, unit_hash, A, "loaded", active, sub))


# --- waiting ---------------------------------------------------------------------------------------------------


async def test_start_waits_until_the_unit_runs_and_returns_where_it_runs(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    report(view, "inactive", "dead")
    machines.then(lambda: report(view, "activating", "start-pre"), lambda: report(view, "active", "running"))
    progress = await fleet.start("hello.service", wait=True, timeout=30)
    assert progress == UnitProgress("hello.service", "launched", ON_A, "active", "running")
    assert progress.machine_id == A
    assert machines.slept == [0.5, 0.5]


async def test_without_wait_the_state_is_set_and_nothing_polls(
    fleet: Client, registry: MemoryRegistry, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    await fleet.start("hello.service")
    assert (await registry.get_unit("hello.service")).desired_state == "launched"  # type: ignore[union-attr]
    assert machines.slept == []


async def test_a_start_that_fails_raises_unit_failed_with_why(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    report(view, "inactive", "dead")

    def fails() -> None:
        report(view, "failed", "failed")
        view.statuses["hello.service"] = UnitStatus(
            "hello.service", HELLO_HASH, active="failed", sub="failed", result="exit-code", since=1_800_000_001.0
        )

    machines.then(fails)
    with pytest.raises(UnitFailed) as info:
        await fleet.start("hello.service", wait=True, timeout=5)
    failed = info.value
    assert (failed.name, failed.machine, failed.active, failed.sub, failed.result) == (
        "hello.service",
        ON_A,
        "failed",
        "failed",
        "exit-code",
    )
    assert str(failed) == f"Unit hello.service failed on {ON_A}: failed/failed (exit-code)"
    assert failed.progress.since == 1_800_000_001.0


async def test_a_failure_from_before_the_start_is_not_its_outcome(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    report(view, "failed", "failed")
    machines.then(lambda: report(view, "active", "running"))
    assert (await fleet.start("hello.service", wait=True, timeout=5)).active == "active"
    assert machines.slept == [0.5]


async def test_a_unit_no_machine_can_take_raises_unit_unplaceable(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", machine=None)
    view.reasons["hello.service"] = ("machine 1a2b3c4d: metadata disk=ssd not satisfied", "machine 9f8e7d6c: busy")
    with pytest.raises(UnitUnplaceable) as info:
        await fleet.load("hello.service", wait=True, timeout=5)
    assert info.value.reasons == view.reasons["hello.service"]
    assert str(info.value) == (
        "Unit hello.service cannot be placed: machine 1a2b3c4d: metadata disk=ssd not satisfied; machine 9f8e7d6c: busy"
    )
    assert machines.slept == []


async def test_the_timeout_is_read_on_the_clients_clock(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    report(view, "activating", "start-pre")
    with pytest.raises(WaitTimedOut) as info:
        await fleet.start("hello.service", wait=True, timeout=1.0)
    assert machines.slept == [0.5, 0.5]  # polls at 0, 0.5 and 1.0 virtual seconds, then it gives up
    assert info.value.names == ("hello.service",)
    assert info.value.units == (UnitProgress("hello.service", "launched", ON_A, "activating", "start-pre"),)
    assert str(info.value) == "not launched in time: hello.service"


async def test_stop_unload_and_destroy_wait_until_the_unit_gets_there(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="launched")
    report(view, "active", "running")

    async def unscheduled() -> None:
        view.state_list.clear()
        await registry.clear_machine("hello.service")

    machines.then(lambda: report(view, "inactive", "dead"), unscheduled)
    assert await fleet.stop("hello.service", wait=True, timeout=5) == UnitProgress(
        "hello.service", "loaded", ON_A, "inactive", "dead"
    )
    assert await fleet.unload("hello.service", wait=True, timeout=5) == UnitProgress("hello.service", "inactive")
    await fleet.destroy("hello.service", wait=True, timeout=5)
    assert await fleet.unit("hello.service") is None
    assert machines.slept == [0.5, 0.5]


async def test_restart_waits_for_the_stop_then_the_start(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="launched")
    report(view, "active", "running")
    machines.then(
        lambda: report(view, "deactivating", "stop-sigterm"),
        lambda: report(view, "inactive", "dead"),
        lambda: report(view, "active", "running"),
    )
    progress = await fleet.restart("hello.service", wait=True, timeout=5)
    assert (progress.current_state, progress.active) == ("launched", "active")
    assert machines.slept == [0.5, 0.5, 0.5]


async def test_restart_without_wait_still_waits_for_the_stop(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="launched")
    report(view, "active", "running")
    machines.then(lambda: report(view, "inactive", "dead"))
    await fleet.restart("hello.service", timeout=5)
    assert (await registry.get_unit("hello.service")).desired_state == "launched"  # type: ignore[union-attr]
    assert machines.slept == [0.5]


async def test_a_unit_destroyed_while_waited_for_raises_unit_gone(
    fleet: Client, registry: MemoryRegistry, view: StaticView, machines: Machines
) -> None:
    await submitted(registry, "hello.service", desired="loaded")
    report(view, "activating", "start")

    async def destroyed() -> None:
        await registry.delete_unit("hello.service")

    machines.then(destroyed)
    with pytest.raises(UnitGone, match=r"^Unit hello.service no longer exists$"):
        await fleet.start("hello.service", wait=True, timeout=5)


async def test_waiting_needs_a_unit_and_one_machine_to_report_it(
    fleet: Client, registry: MemoryRegistry, machines: Machines
) -> None:
    with pytest.raises(UnitNotFound) as info:
        await fleet.start("nope.service", wait=True)
    assert (info.value.name, info.value.status) == ("nope.service", 404)
    await submitted(registry, "everywhere.service", GLOBAL, "loaded", machine=None)
    with pytest.raises(ClientError, match="a global unit has no one machine"):
        await fleet.start("everywhere.service", wait=True)
    assert (await registry.get_unit("everywhere.service")).desired_state == "loaded"  # type: ignore[union-attr]
    assert machines.slept == []


# --- typed refusals --------------------------------------------------------------------------------------------


async def test_an_unknown_unit_is_unit_not_found_everywhere(fleet: Client) -> None:
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "status": lambda: fleet.status("nope.service"),
        "cat": lambda: fleet.cat("nope.service"),
        "destroy": lambda: fleet.destroy("nope.service"),
        "explain": lambda: fleet.explain("nope.service"),
        "start": lambda: fleet.start("nope.service"),
    }
    for call, make in calls.items():
        with pytest.raises(UnitNotFound) as info:
            await make()
        assert info.value.name == "nope.service", call
        assert isinstance(info.value, APIRequestFailed)  # callers that caught that still do
    with pytest.raises(UnitNotFound) as info:
        async for _ in fleet.journal("nope.service"):
            pass
    assert (info.value.status, info.value.message) == (404, "unit does not exist")


async def test_setting_the_state_of_an_unknown_unit_keeps_the_apis_409(fleet: Client) -> None:
    with pytest.raises(UnitNotFound) as info:
        await fleet.stop("nope.service")
    assert (info.value.status, info.value.message) == (409, "unit does not exist and options field empty")


async def test_an_invalid_unit_file_is_invalid_unit_with_its_line(fleet: Client) -> None:
    bad = UnitFile.from_options(
        [UnitOption("Service", "Restart", "sometimes"), UnitOption("Service", "ExecStart", "/bin/true")]
    )
    with pytest.raises(InvalidUnit) as info:
        await fleet.submit("a.service", bad)
    assert (info.value.name, info.value.line, info.value.status) == ("a.service", 2, 400)
    assert info.value.message.startswith("a.service:2: Restart=: invalid value 'sometimes'")


def test_an_invalid_unit_without_a_line() -> None:
    assert InvalidUnit("a b.service", 400, "invalid unit name 'a b.service'").line is None


def test_the_error_tree() -> None:
    assert all(issubclass(error, APIRequestFailed) for error in (UnitNotFound, InvalidUnit))
    assert all(issubclass(error, WaitFailed) for error in (UnitFailed, UnitUnplaceable, UnitGone))
    assert all(issubclass(error, ClientError) for error in (WaitFailed, WaitTimedOut))
    assert issubclass(ClientError, fleetlet.FleetletError)


# --- cat, explain, unit_files ----------------------------------------------------------------------------------


async def test_cat_is_the_unit_file_as_the_cluster_holds_it(fleet: Client, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", PICKY)
    assert await fleet.cat("hello.service") == parse(PICKY, "hello.service").serialize()
    assert (await fleet.cat("hello.service")).startswith("[Unit]\nDescription=Hello\n")


async def test_unit_files_are_the_units(fleet: Client, registry: MemoryRegistry) -> None:
    await submitted(registry, "b.service")
    await submitted(registry, "a.service", PICKY)
    assert await fleet.unit_files() == await fleet.units()
    assert [unit.name for unit in await fleet.unit_files()] == ["a.service", "b.service"]


async def test_explain_a_scheduled_unit_and_what_it_requires(fleet: Client, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", PICKY, "launched")
    found = await fleet.explain("hello.service")
    assert found == Explanation(
        "scheduled",
        UnitReport(
            "hello.service",
            description="Hello",
            hash=parse(PICKY, "hello.service").hash,
            desired_state="launched",
            machine_id=A,
            primary_ip="192.0.2.7",
        ),
        (UnitOption("X-Fleet", "MachineMetadata", "disk=ssd"),),
    )
    assert found.name == "hello.service"


@pytest.mark.parametrize(
    ("desired", "machine", "reasons", "placement"),
    [
        ("launched", None, ("machine 1a2b3c4d: busy",), "unplaceable"),
        ("inactive", None, (), "inactive"),
        ("loaded", None, (), "pending"),
        ("inactive", A, (), "unloading"),
    ],
)
async def test_explain_says_where_the_unit_stands(
    fleet: Client,
    registry: MemoryRegistry,
    view: StaticView,
    desired: DesiredState,
    machine: str | None,
    reasons: tuple[str, ...],
    placement: str,
) -> None:
    await submitted(registry, "hello.service", desired=desired, machine=machine)
    if reasons:
        view.reasons["hello.service"] = reasons
    found = await fleet.explain("hello.service")
    assert (found.placement, found.reasons, found.requirements) == (placement, reasons, ())
