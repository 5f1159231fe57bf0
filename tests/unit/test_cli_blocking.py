"""The blocking unit commands: waiting until units reach the state set, fleetctl's lines, and the failures.

Three layers: the pure waiting logic over a scripted poll; the commands in the test's own loop, against the real API
over a MemoryRegistry, with a scripted sleep that changes what the machines report between polls (no time passes);
and ``main([...])`` in a worker thread, for what the first poll already settles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import anyio
import pytest

from fleetlet.api import StaticView, UnitState
from fleetlet.cli.blocking import describe, problem_line, reached_line, timeout_message
from fleetlet.cli.endpoint import CommandError
from fleetlet.cli.units import Blocking, destroy_units, restart_units, transition_units
from fleetlet.client import Client
from fleetlet.client.poll import ClusterPoll
from fleetlet.client.waiting import POLL_INTERVAL, Goal, Verdict, judge, wait_for
from fleetlet.client.waiting import UnitProgress as Seen
from fleetlet.clock import ManualClock
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry import MemoryRegistry
from fleetlet.registry.model import DesiredState
from fleetlet.service.states import UnitStatus
from fleetlet.units.syntax import parse
from tests.unit.test_cli_units import SIMPLE, Fleetctl, serving, write

pytestmark = pytest.mark.anyio

A = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
B = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ON_A = "1a2b3c4d.../192.0.2.7"
MACHINES = [MachineSpec(A, {}, "192.0.2.7"), MachineSpec(B)]
HELLO = SIMPLE.replace("Simple", "Hello")
HELLO_HASH = parse(HELLO, "hello.service").hash
WORLD = SIMPLE.replace("Simple", "World")
WORLD_HASH = parse(WORLD, "world.service").hash
GLOBAL = SIMPLE + "\n[X-Fleet]\nGlobal=true\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- judge: one unit, one poll -----------------------------------------------------------------------------------


def seen(
    current: DesiredState | None = "loaded",
    active: str = "",
    sub: str = "",
    machine: str = ON_A,
    **more: object,
) -> Seen:
    return Seen("hello.service", current, machine, active, sub, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("goal", "unit", "stale", "verdict"),
    [
        ("launched", seen("launched", "active", "running"), False, "reached"),
        ("launched", seen("launched", "active", "exited"), False, "reached"),
        ("launched", seen("launched", "activating", "start-pre"), False, "waiting"),
        # launched, but no state of its current contents yet (a state of other contents is not shown)
        ("launched", seen("launched"), False, "waiting"),
        ("launched", seen("loaded", "inactive", "dead"), False, "waiting"),
        ("launched", seen("loaded", "failed", "failed"), False, "failed"),
        ("launched", seen("loaded", "failed", "failed"), True, "waiting"),
        ("launched", seen("inactive", machine="", reasons=("no machine",)), False, "unplaceable"),
        ("launched", seen("inactive", machine=""), False, "waiting"),
        ("launched", seen(None, machine=""), False, "gone"),
        ("loaded", seen("loaded", "inactive", "dead"), False, "reached"),
        ("loaded", seen("loaded", "failed", "failed"), False, "reached"),  # stopped, whatever became of it
        ("loaded", seen("launched", "active", "running"), False, "waiting"),
        ("loaded", seen("loaded", "deactivating", "stop-sigterm"), False, "waiting"),  # not stopped yet
        ("loaded", seen("loaded"), False, "reached"),  # its machine runs other contents: none of these to stop
        ("loaded", seen("inactive", machine="", reasons=("no machine",)), False, "unplaceable"),
        ("loaded", seen(None, machine=""), False, "gone"),
        ("inactive", seen("inactive", machine=""), False, "reached"),
        ("inactive", seen("loaded"), False, "waiting"),
        ("inactive", seen("loaded", machine="", reasons=("no machine",)), False, "waiting"),
        ("destroyed", seen(None, machine=""), False, "reached"),
        ("destroyed", seen("inactive", machine=""), False, "waiting"),
    ],
)
def test_judge(goal: Goal, unit: Seen, stale: bool, verdict: Verdict) -> None:
    assert judge(goal, unit, stale_failure=stale) == verdict


# --- fleetctl's lines --------------------------------------------------------------------------------------------


def test_lines() -> None:
    assert reached_line("launched", seen("launched", "active", "running")) == f"Unit hello.service launched on {ON_A}"
    assert reached_line("loaded", seen("loaded", machine="9f8e7d6c...")) == "Unit hello.service loaded on 9f8e7d6c..."
    assert reached_line("inactive", seen("inactive", machine="")) == "Unit hello.service inactive"
    assert reached_line("destroyed", seen(None, machine="")) == "Destroyed hello.service"
    failed = seen("loaded", "failed", "failed")
    assert problem_line("failed", failed) == f"Unit hello.service failed on {ON_A}: failed/failed"
    assert problem_line("failed", seen("loaded", "failed", "failed", result="exit-code")) == (
        f"Unit hello.service failed on {ON_A}: failed/failed (exit-code)"
    )
    assert problem_line("unplaceable", seen("inactive", machine="", reasons=("a: no", "b: no"))) == (
        "Unit hello.service cannot be placed: a: no; b: no"
    )
    assert problem_line("gone", seen(None)) == "Unit hello.service no longer exists"
    with pytest.raises(ValueError, match="not stuck"):
        problem_line("reached", failed)


def test_timeout_message_names_each_unit_and_where_it_stands() -> None:
    units = [seen("launched", "activating", "start-pre"), Seen("world.service", "inactive")]
    assert timeout_message("launched", units, 3) == (
        "Error waiting for units: not launched after 3 attempts: "
        f"hello.service (launched on {ON_A}, activating/start-pre), world.service (inactive)"
    )
    assert timeout_message("destroyed", [seen("loaded")], 1) == (
        f"Error waiting for units: not destroyed after 1 attempt: hello.service (loaded on {ON_A})"
    )
    assert describe(Seen("x.service")) == "gone"


# --- wait_for: the loop over a scripted poll ---------------------------------------------------------------------


class ScriptedPoll:
    """Answers each poll with the next of ``answers`` (the last one again once they run out)."""

    def __init__(self, *answers: Mapping[str, Seen]) -> None:
        self.answers = list(answers)
        self.asked: list[list[str]] = []

    async def __call__(self, names: Sequence[str]) -> Mapping[str, Seen]:
        self.asked.append(list(names))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Recorded:
    def __init__(self) -> None:
        self.slept: list[float] = []
        self.settled: list[tuple[str, Verdict]] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def on_settled(self, unit: Seen, verdict: Verdict) -> None:
        self.settled.append((unit.name, verdict))


def named(name: str, current: DesiredState | None, active: str = "", **more: object) -> Seen:
    return Seen(name, current, ON_A if current in ("loaded", "launched") else "", active, **more)  # type: ignore[arg-type]


async def test_wait_for_polls_each_unit_until_it_settles() -> None:
    poll = ScriptedPoll(
        {"a": named("a", "loaded", "inactive"), "b": named("b", "launched", "activating")},
        {"a": named("a", "launched", "active"), "b": named("b", "launched", "activating")},
        {"b": named("b", "loaded", "failed")},
    )
    record = Recorded()
    still = await wait_for(["a", "b", "a"], "launched", poll, attempts=0, sleep=record.sleep, settled=record.on_settled)
    assert still == []
    assert poll.asked == [["a", "b"], ["a", "b"], ["b"]]  # each unit once; a settled one is not asked for again
    assert record.settled == [("a", "reached"), ("b", "failed")]
    assert record.slept == [POLL_INTERVAL, POLL_INTERVAL]


async def test_wait_for_gives_up_after_the_attempts() -> None:
    poll = ScriptedPoll({"a": named("a", "launched", "activating")})
    record = Recorded()
    still = await wait_for(["a"], "launched", poll, attempts=3, sleep=record.sleep, settled=record.on_settled)
    assert still == [named("a", "launched", "activating")]
    assert len(poll.asked) == 3
    assert record.slept == [POLL_INTERVAL] * 2  # none after the last poll
    assert record.settled == []


async def test_without_a_limit_it_keeps_polling() -> None:
    waiting = {"a": named("a", "launched", "activating")}
    poll = ScriptedPoll(*([waiting] * 40), {"a": named("a", "launched", "active")})
    record = Recorded()
    assert await wait_for(["a"], "launched", poll, attempts=0, sleep=record.sleep, settled=record.on_settled) == []
    assert len(record.slept) == 40
    assert record.settled == [("a", "reached")]


async def test_a_missing_answer_is_a_unit_that_is_gone() -> None:
    record = Recorded()
    assert (
        await wait_for(["a"], "destroyed", ScriptedPoll({}), attempts=0, sleep=record.sleep, settled=record.on_settled)
        == []
    )
    assert record.settled == [("a", "reached")]


async def test_a_failure_from_before_the_command_counts_only_once_the_unit_moved_on() -> None:
    old = named("a", "loaded", "failed")
    poll = ScriptedPoll({"a": old}, {"a": named("a", "launched", "activating")}, {"a": old})
    record = Recorded()
    still = await wait_for(
        ["a"], "launched", poll, attempts=0, sleep=record.sleep, settled=record.on_settled, before={"a": old}
    )
    assert still == []
    assert record.settled == [("a", "failed")]
    assert len(poll.asked) == 3


async def test_a_failure_that_changed_since_before_the_command_is_a_new_one() -> None:
    old = named("a", "loaded", "failed", since=100.0, result="exit-code")
    poll = ScriptedPoll({"a": old}, {"a": named("a", "loaded", "failed", since=104.5, result="exit-code")})
    record = Recorded()
    before = {"a": old}
    still = await wait_for(
        ["a"], "launched", poll, attempts=5, sleep=record.sleep, settled=record.on_settled, before=before
    )
    assert (still, record.settled, record.slept) == ([], [("a", "failed")], [POLL_INTERVAL])


async def test_a_stale_failure_that_never_changes_runs_out_the_attempts() -> None:
    old = named("a", "loaded", "failed")
    record = Recorded()
    still = await wait_for(
        ["a"],
        "launched",
        ScriptedPoll({"a": old}),
        attempts=2,
        sleep=record.sleep,
        settled=record.on_settled,
        before={"a": old},
    )
    assert still == [old]


async def test_the_poll_interval_on_a_manual_clock() -> None:
    """With a real clock's sleep, the polls are half a second apart: exact virtual times."""
    clock = ManualClock()
    times: list[float] = []
    answers = [named("a", "launched", "activating")] * 2 + [named("a", "launched", "active")]

    async def poll(names: Sequence[str]) -> Mapping[str, Seen]:
        times.append(clock.monotonic())
        return {"a": answers.pop(0)}

    async def waiting() -> None:
        assert await wait_for(["a"], "launched", poll, attempts=0, sleep=clock.sleep, settled=lambda s, v: None) == []

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        while len(times) < 3:
            await clock.advance_to_next()
    assert times == [0.0, 0.5, 1.0]


# --- the API behind it -------------------------------------------------------------------------------------------


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    async with MemoryRegistry(ManualClock()) as registry:
        yield registry


@pytest.fixture
def view() -> StaticView:
    return StaticView(list(MACHINES), [])


@pytest.fixture
async def endpoint(registry: MemoryRegistry, view: StaticView, tmp_path: Path) -> AsyncIterator[str]:
    async with serving(registry, tmp_path / "api.sock", view) as url:
        yield url


@pytest.fixture
async def fleet(endpoint: str) -> AsyncIterator[Client]:
    async with Client(endpoint) as fleet:
        yield fleet


async def submitted(
    registry: MemoryRegistry, name: str, text: str, desired: DesiredState = "inactive", machine: str | None = None
) -> None:
    await registry.put_unit(name, parse(text, name), desired_state=desired)
    if machine is not None:
        await registry.set_machine(name, machine)


def report(view: StaticView, name: str, unit_hash: str, active: str, sub: str, machine: str = A) -> None:
    """What ``machine`` reports of ``name`` from now on."""
    view.state_list[:] = [s for s in view.state_list if (s.name, s.machine_id) != (name, machine)]
    view.state_list.append(UnitState(name, unit_hash, machine, "loaded", active, sub))


@pytest.mark.parametrize("per_unit_limit", [10, 0])  # one request per unit, or the lists
async def test_cluster_poll(fleet: Client, registry: MemoryRegistry, view: StaticView, per_unit_limit: int) -> None:
    await submitted(registry, "hello.service", HELLO, "launched", A)
    await submitted(registry, "world.service", WORLD, "launched", B)
    await submitted(registry, "other.service", SIMPLE, "launched")
    report(view, "hello.service", HELLO_HASH, "active", "running")
    report(view, "world.service", "f" * 40, "failed", "failed", B)  # of other contents: not this unit's state
    poll = ClusterPoll(fleet, "launched", per_unit_limit=per_unit_limit)
    found = await poll(["hello.service", "world.service", "other.service", "nope.service"])
    assert list(found) == ["hello.service", "world.service", "other.service", "nope.service"]
    assert found["hello.service"] == Seen("hello.service", "launched", ON_A, "active", "running")
    assert (found["world.service"].machine, found["world.service"].active) == ("9f8e7d6c...", "")  # B has no IP
    assert found["other.service"] == Seen("other.service", "inactive")
    assert found["nope.service"] == Seen("nope.service")


@pytest.mark.parametrize(
    ("goal", "states"), [("launched", True), ("loaded", True), ("inactive", False), ("destroyed", False)]
)
async def test_cluster_poll_asks_for_states_only_when_judging_a_start_or_a_stop(
    fleet: Client, registry: MemoryRegistry, view: StaticView, goal: Goal, states: bool
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "inactive", "dead")
    expected = (
        Seen("hello.service", "loaded", ON_A, "inactive", "dead") if states else Seen("hello.service", "loaded", ON_A)
    )
    assert await ClusterPoll(fleet, goal)(["hello.service"]) == {"hello.service": expected}


@pytest.mark.parametrize(("per_unit_limit", "asked"), [(10, True), (0, False)])
async def test_cluster_poll_asks_why_a_unit_has_no_machine_only_of_a_few_units(
    fleet: Client, registry: MemoryRegistry, view: StaticView, per_unit_limit: int, asked: bool
) -> None:
    await submitted(registry, "hello.service", HELLO, "launched")
    view.reasons["hello.service"] = ("machine 1a2b3c4d: metadata region=mars not satisfied",)
    found = await ClusterPoll(fleet, "launched", per_unit_limit=per_unit_limit)(["hello.service"])
    assert found["hello.service"].reasons == (view.reasons["hello.service"] if asked else ())
    stopping = await ClusterPoll(fleet, "inactive", per_unit_limit=per_unit_limit)(["hello.service"])
    assert stopping["hello.service"].reasons == ()  # nothing to place


# --- the commands, with what the machines report changing between polls -----------------------------------------


class Machines:
    """The sleep between polls: each one applies the next change to what the machines report; no time passes."""

    def __init__(self, *changes: Callable[[], None]) -> None:
        self.changes = list(changes)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        assert self.changes, "polled more often than the test scripted"
        self.changes.pop(0)()

    def blocking(self, attempts: int = 0) -> Blocking:
        return Blocking(attempts=attempts, sleep=self.sleep)


async def test_start_waits_until_the_unit_runs(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "inactive", "dead")
    machines = Machines(
        lambda: report(view, "hello.service", HELLO_HASH, "activating", "start-pre"),
        lambda: report(view, "hello.service", HELLO_HASH, "active", "running"),
    )
    assert await transition_units(fleet, "start", ["hello"], machines.blocking()) == 0
    assert capsys.readouterr() == (f"Unit hello.service launched on {ON_A}\n", "")
    assert machines.slept == [0.5, 0.5]


async def test_a_start_that_fails_is_reported_and_the_others_still_awaited(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    await submitted(registry, "world.service", WORLD, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "inactive", "dead")
    report(view, "world.service", WORLD_HASH, "inactive", "dead")
    machines = Machines(
        lambda: report(view, "hello.service", HELLO_HASH, "failed", "failed"),
        lambda: report(view, "world.service", WORLD_HASH, "active", "exited"),
    )
    assert await transition_units(fleet, "start", ["hello", "world"], machines.blocking()) == 1
    assert capsys.readouterr() == (
        f"Unit world.service launched on {ON_A}\n",
        f"Unit hello.service failed on {ON_A}: failed/failed\n",
    )


def fail(view: StaticView, name: str, unit_hash: str, since: float, result: str = "exit-code") -> None:
    """The machine reports ``name`` failed, with the status that says why and since when."""
    report(view, name, unit_hash, "failed", "failed")
    status = UnitStatus(name, unit_hash, active="failed", sub="failed", result=result, since=since)  # type: ignore[arg-type]
    view.statuses[name] = status


async def test_a_failed_start_says_why_when_the_status_does(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "inactive", "dead")
    machines = Machines(lambda: fail(view, "hello.service", HELLO_HASH, 1_800_000_005.0))
    assert await transition_units(fleet, "start", ["hello"], machines.blocking()) == 1
    assert capsys.readouterr() == ("", f"Unit hello.service failed on {ON_A}: failed/failed (exit-code)\n")


async def test_a_failure_since_the_start_is_known_by_its_time(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    fail(view, "hello.service", HELLO_HASH, 1_800_000_000.0)
    # started again, it failed again between two polls: only its time tells
    machines = Machines(lambda: fail(view, "hello.service", HELLO_HASH, 1_800_000_003.0, "timeout"))
    assert await transition_units(fleet, "start", ["hello"], machines.blocking()) == 1
    assert capsys.readouterr() == ("", f"Unit hello.service failed on {ON_A}: failed/failed (timeout)\n")
    assert machines.slept == [0.5]


async def test_a_failure_from_before_the_start_is_not_taken_for_its_outcome(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "failed", "failed")  # it failed, then was stopped; now started again
    machines = Machines(lambda: report(view, "hello.service", HELLO_HASH, "active", "running"))
    assert await transition_units(fleet, "start", ["hello"], machines.blocking()) == 0
    assert capsys.readouterr() == (f"Unit hello.service launched on {ON_A}\n", "")
    assert machines.slept == [0.5]


async def test_the_attempts_run_out(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    await submitted(registry, "world.service", WORLD, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "activating", "start-pre")
    report(view, "world.service", WORLD_HASH, "active", "running")
    machines = Machines(lambda: None, lambda: None)
    with pytest.raises(CommandError) as error:
        await transition_units(fleet, "start", ["hello", "world"], machines.blocking(attempts=3))
    assert str(error.value) == (
        "Error waiting for units: not launched after 3 attempts: "
        f"hello.service (launched on {ON_A}, activating/start-pre)"
    )
    assert capsys.readouterr().out == f"Unit world.service launched on {ON_A}\n"
    assert machines.slept == [0.5, 0.5]


async def test_start_replace_waits_for_the_new_contents(
    fleet: Client,
    registry: MemoryRegistry,
    view: StaticView,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    await submitted(registry, "hello.service", HELLO, "launched", A)
    report(view, "hello.service", HELLO_HASH, "active", "running")  # the old contents run
    changed = HELLO.replace("Hello", "Hello again")
    write(tmp_path, "hello.service", changed)
    machines = Machines(
        lambda: report(view, "hello.service", parse(changed, "hello.service").hash, "active", "running")
    )
    assert await transition_units(fleet, "start", ["hello"], machines.blocking(), replace=True) == 0
    assert capsys.readouterr() == (f"Unit hello.service replaced\nUnit hello.service launched on {ON_A}\n", "")
    assert machines.slept == [0.5]


async def test_restart_waits_for_the_stop_then_the_start(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "launched", A)
    await submitted(registry, "world.service", WORLD, "loaded", A)  # not running: only started
    report(view, "hello.service", HELLO_HASH, "active", "running")
    report(view, "world.service", WORLD_HASH, "inactive", "dead")

    def both_run() -> None:
        report(view, "hello.service", HELLO_HASH, "active", "running")
        report(view, "world.service", WORLD_HASH, "active", "running")

    machines = Machines(
        lambda: report(view, "hello.service", HELLO_HASH, "deactivating", "stop-sigterm"),
        # the stop ends in a failure (docker stop's exit 143): not the outcome of the start that follows
        lambda: fail(view, "hello.service", HELLO_HASH, 1_800_000_001.0),
        lambda: report(view, "hello.service", HELLO_HASH, "activating", "start"),
        both_run,
    )
    assert await restart_units(fleet, ["hello", "world"], machines.blocking()) == 0
    assert capsys.readouterr() == (
        f"Unit hello.service loaded on {ON_A}\n"
        f"Unit hello.service launched on {ON_A}\nUnit world.service launched on {ON_A}\n",
        "",
    )
    assert machines.slept == [0.5] * 4
    assert (await registry.get_unit("hello.service")).desired_state == "launched"  # type: ignore[union-attr]


async def test_restart_no_block_still_waits_for_the_stop(
    fleet: Client, registry: MemoryRegistry, view: StaticView, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "launched", A)
    report(view, "hello.service", HELLO_HASH, "active", "running")
    machines = Machines(lambda: report(view, "hello.service", HELLO_HASH, "inactive", "dead"))
    blocking = Blocking(block=False, sleep=machines.sleep)
    assert await restart_units(fleet, ["hello"], blocking) == 0
    assert capsys.readouterr() == (
        f"Unit hello.service loaded on {ON_A}\nTriggered unit hello.service start\n",
        "",
    )
    assert machines.slept == [0.5]


async def test_destroy_waits_until_the_unit_is_gone(
    fleet: Client, registry: MemoryRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    await submitted(registry, "hello.service", HELLO, "launched", A)
    await submitted(registry, "world.service", WORLD)
    assert await destroy_units(fleet, ["*"], Machines().blocking()) == 0
    assert capsys.readouterr() == ("Destroyed hello.service\nDestroyed world.service\n", "")
    assert await registry.get_unit("hello.service") is None


# --- through main: what the first poll settles -------------------------------------------------------------------


@pytest.fixture
def cli(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    return Fleetctl(endpoint, capsys)


async def test_start_prints_where_the_unit_runs(cli: Fleetctl, registry: MemoryRegistry, view: StaticView) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    await submitted(registry, "world.service", WORLD, "inactive", B)
    report(view, "hello.service", HELLO_HASH, "active", "running")
    report(view, "world.service", WORLD_HASH, "active", "exited", B)
    assert await cli("start", "hello", "world.service") == (
        0,
        f"Unit hello.service launched on {ON_A}\nUnit world.service launched on 9f8e7d6c...\n",
        "",
    )
    assert (await registry.get_unit("world.service")).desired_state == "launched"  # type: ignore[union-attr]


async def test_load_and_stop_print_where_the_unit_is_loaded(
    cli: Fleetctl, registry: MemoryRegistry, view: StaticView
) -> None:
    await submitted(registry, "hello.service", HELLO, "inactive", A)
    await submitted(registry, "world.service", WORLD, "launched", A)
    report(view, "hello.service", HELLO_HASH, "inactive", "dead")
    report(view, "world.service", WORLD_HASH, "failed", "failed")
    assert await cli("load", "hello") == (0, f"Unit hello.service loaded on {ON_A}\n", "")
    assert await cli("stop", "world") == (0, f"Unit world.service loaded on {ON_A}\n", "")


async def test_a_unit_no_machine_can_take_ends_the_wait(
    cli: Fleetctl, registry: MemoryRegistry, view: StaticView
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded")
    await submitted(registry, "world.service", WORLD, "inactive", A)
    report(view, "world.service", WORLD_HASH, "active", "running")
    view.reasons["hello.service"] = (
        "machine 1a2b3c4d: metadata region=mars not satisfied",
        "machine 9f8e7d6c: conflicts with world.service",
    )
    assert await cli("start", "hello", "world") == (
        1,
        f"Unit world.service launched on {ON_A}\n",
        "Unit hello.service cannot be placed: machine 1a2b3c4d: metadata region=mars not satisfied; "
        "machine 9f8e7d6c: conflicts with world.service\n",
    )
    assert (await registry.get_unit("hello.service")).desired_state == "launched"  # type: ignore[union-attr]


async def test_unload_prints_inactive(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded")
    assert await cli("unload", "hello") == (0, "Unit hello.service inactive\n", "")


async def test_destroy_prints_destroyed(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    assert await cli("destroy", "hello") == (0, "Destroyed hello.service\n", "")


async def test_no_block_prints_triggered(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", HELLO, "inactive")
    assert await cli("start", "--no-block", "hello") == (0, "Triggered unit hello.service start\n", "")
    assert await cli("stop", "--no-block", "hello") == (0, "Triggered unit hello.service stop\n", "")
    assert await cli("unload", "--no-block", "hello") == (0, "Triggered unit hello.service unload\n", "")
    assert await cli("destroy", "--no-block", "hello") == (0, "Destroyed hello.service\n", "")


async def test_restart_no_block_gives_up_on_a_stop_that_does_not_come(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", HELLO, "launched")  # no machine: it is never loaded anywhere
    assert await cli("restart", "--no-block", "hello", "--block-attempts", "1") == (
        1,
        "",
        "Error waiting for units: not loaded after 1 attempt: hello.service (inactive)\n",
    )


async def test_restart_of_a_stopped_unit_only_starts_it(
    cli: Fleetctl, registry: MemoryRegistry, view: StaticView
) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded", A)
    report(view, "hello.service", HELLO_HASH, "active", "running")
    assert await cli("restart", "hello") == (0, f"Unit hello.service launched on {ON_A}\n", "")


async def test_a_created_unit_that_no_machine_takes_in_time(cli: Fleetctl, registry: MemoryRegistry) -> None:
    write(Path.cwd(), "simple.service")
    assert await cli("start", "simple", "--block-attempts", "1") == (
        1,
        "Unit simple.service inactive\n",
        "Error waiting for units: not launched after 1 attempt: simple.service (inactive)\n",
    )
    assert (await registry.get_unit("simple.service")).desired_state == "launched"  # type: ignore[union-attr]


async def test_global_units_are_not_waited_for(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "everywhere.service", GLOBAL, "loaded")
    assert await cli("start", "everywhere") == (0, "Triggered global unit everywhere.service start\n", "")


async def test_the_options_before_the_command(cli: Fleetctl, registry: MemoryRegistry) -> None:
    await submitted(registry, "hello.service", HELLO, "loaded")
    assert await cli.bare("--endpoint", cli.endpoint, "--request-timeout", "5", "unload", "hello") == (
        0,
        "Unit hello.service inactive\n",
        "",
    )


@pytest.mark.parametrize(
    ("value", "reason"), [("-1", "must be 0 (no limit) or more: '-1'"), ("x", "not a whole number: 'x'")]
)
async def test_block_attempts_must_be_a_count(cli: Fleetctl, value: str, reason: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        await cli("stop", "hello", "--block-attempts", value)
    assert exit_.value.code == 2
    assert cli.capsys.readouterr().err.endswith(f"error: argument --block-attempts: {reason}\n")
