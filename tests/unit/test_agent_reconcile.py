"""The agent reconciler as tables: what this machine should have; desired and current units in, exact tasks out."""

from __future__ import annotations

import pytest

from fleetlet.agent.reconcile import CurrentUnit, DesiredUnit, LocalState, Task, desired_here, plan
from fleetlet.engine.snapshot import DesiredState, MachineSpec, Snapshot, UnitSpec
from fleetlet.service.states import ACTIVE_OF, Result, SubState
from fleetlet.units.xfleet import Requirements

A = "a" * 40
B = "b" * 40


def want(name: str, state: LocalState = "launched", hash: str = A, revision: int = 7) -> DesiredUnit:
    return DesiredUnit(name, hash, state, revision)


def have(
    name: str, sub: SubState = "dead", hash: str = A, result: Result = "success", started_for: int | None = None
) -> CurrentUnit:
    return CurrentUnit(name, hash, ACTIVE_OF[sub], sub, result, started_for)


CASES: list[tuple[str, list[DesiredUnit], list[CurrentUnit], list[Task]]] = [
    ("nothing to do", [], [], []),
    (
        "new launched unit: load then start",
        [want("hello.service")],
        [],
        [
            Task("load", "hello.service", "hello.service: desired launched, not loaded here"),
            Task("start", "hello.service", "hello.service: desired launched, current loaded", 7),
        ],
    ),
    (
        "new loaded unit: load only",
        [want("hello.service", "loaded")],
        [],
        [Task("load", "hello.service", "hello.service: desired loaded, not loaded here")],
    ),
    (
        "running as desired",
        [want("hello.service")],
        [have("hello.service", "running", started_for=7)],
        [],
    ),
    ("activating counts as launched", [want("hello.service")], [have("hello.service", "start-pre")], []),
    ("reloading counts as launched", [want("hello.service")], [have("hello.service", "reload")], []),
    ("oneshot exited with RemainAfterExit", [want("hello.service")], [have("hello.service", "exited")], []),
    ("waiting to auto-restart is Restart='s job", [want("hello.service")], [have("hello.service", "auto-restart")], []),
    ("deactivating: wait for it to settle", [want("hello.service")], [have("hello.service", "stop-sigterm")], []),
    (
        "desired launched, found dead: start, as fleet did",
        [want("hello.service")],
        [have("hello.service", "dead", started_for=7)],
        [Task("start", "hello.service", "hello.service: desired launched, current inactive dead", 7)],
    ),
    (
        "failed and never started for this revision: one start",
        [want("hello.service", revision=9)],
        [have("hello.service", "failed", result="exit-code", started_for=7)],
        [
            Task(
                "start",
                "hello.service",
                "hello.service: desired launched, current failed (exit-code), not started for revision 9",
                9,
            )
        ],
    ),
    (
        "failed after an adoption (no start recorded): one start",
        [want("hello.service")],
        [have("hello.service", "failed", result="signal")],
        [
            Task(
                "start",
                "hello.service",
                "hello.service: desired launched, current failed (signal), not started for revision 7",
                7,
            )
        ],
    ),
    (
        "start-limit-hit after our start: no tight loop",
        [want("hello.service")],
        [have("hello.service", "failed", result="start-limit-hit", started_for=7)],
        [],
    ),
    (
        "crashed after our start with Restart=no: not restarted",
        [want("hello.service")],
        [have("hello.service", "failed", result="exit-code", started_for=7)],
        [],
    ),
    (
        "desired loaded, running: stop",
        [want("hello.service", "loaded")],
        [have("hello.service", "running")],
        [Task("stop", "hello.service", "hello.service: desired loaded, current active running")],
    ),
    (
        "desired loaded, waiting to auto-restart: stop",
        [want("hello.service", "loaded")],
        [have("hello.service", "auto-restart")],
        [Task("stop", "hello.service", "hello.service: desired loaded, current activating auto-restart")],
    ),
    ("desired loaded, dead", [want("hello.service", "loaded")], [have("hello.service")], []),
    ("desired loaded, failed", [want("hello.service", "loaded")], [have("hello.service", "failed")], []),
    ("desired loaded, stopping", [want("hello.service", "loaded")], [have("hello.service", "stop-post")], []),
    (
        "no longer desired here: unload (which stops)",
        [],
        [have("hello.service", "running")],
        [Task("unload", "hello.service", "hello.service: no longer desired here, current active running")],
    ),
    (
        "hash changed, launched: replace then start",
        [want("hello.service", hash=B)],
        [have("hello.service", "running")],
        [
            Task("replace", "hello.service", "hello.service: desired hash bbbbbbb, current hash aaaaaaa"),
            Task("start", "hello.service", "hello.service: desired launched, current replaced", 7),
        ],
    ),
    (
        "hash changed, loaded: replace only",
        [want("hello.service", "loaded", hash=B)],
        [have("hello.service", "dead")],
        [Task("replace", "hello.service", "hello.service: desired hash bbbbbbb, current hash aaaaaaa")],
    ),
    (
        "down before up, each group by name",
        [
            want("a.service"),
            want("c.service", "loaded"),
            want("d.service", hash=B),
            want("e.service"),
        ],
        [
            have("b.service", "running"),
            have("c.service", "running"),
            have("d.service", "running"),
            have("e.service", "dead"),
        ],
        [
            Task("unload", "b.service", "b.service: no longer desired here, current active running"),
            Task("stop", "c.service", "c.service: desired loaded, current active running"),
            Task("replace", "d.service", "d.service: desired hash bbbbbbb, current hash aaaaaaa"),
            Task("load", "a.service", "a.service: desired launched, not loaded here"),
            Task("start", "a.service", "a.service: desired launched, current loaded", 7),
            Task("start", "d.service", "d.service: desired launched, current replaced", 7),
            Task("start", "e.service", "e.service: desired launched, current inactive dead", 7),
        ],
    ),
]


@pytest.mark.parametrize(("desired", "current", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(desired: list[DesiredUnit], current: list[CurrentUnit], expected: list[Task]) -> None:
    assert plan({u.name: u for u in desired}, {u.name: u for u in current}) == expected


def test_a_conflicting_unit_is_unloaded_before_its_successor_starts() -> None:
    """``hello.service`` moved away and ``hello_world@1.service`` (Conflicts) arrived on the same pass."""
    tasks = plan({"hello_world@1.service": want("hello_world@1.service")}, {"hello.service": have("hello.service")})
    assert [(t.kind, t.unit) for t in tasks] == [
        ("unload", "hello.service"),
        ("load", "hello_world@1.service"),
        ("start", "hello_world@1.service"),
    ]


def test_the_plan_does_not_depend_on_mapping_order() -> None:
    desired = [want(f"u{i}.service") for i in range(5)]
    current = [have(f"u{i}.service", "running", hash=B) for i in range(3, 8)]
    forward = plan({u.name: u for u in desired}, {u.name: u for u in current})
    backward = plan({u.name: u for u in reversed(desired)}, {u.name: u for u in reversed(current)})
    assert forward == backward


def test_after_the_plan_is_carried_out_there_is_nothing_left_to_do() -> None:
    """Applying a plan by hand (as a supervisor would, with every start succeeding) reaches a fixed point."""
    desired = {"a.service": want("a.service"), "b.service": want("b.service", "loaded", hash=B)}
    current = {"b.service": have("b.service", "running"), "c.service": have("c.service", "running")}
    for task in plan(desired, current):
        if task.kind in ("load", "replace"):
            current[task.unit] = have(task.unit, hash=desired[task.unit].hash)
        elif task.kind == "unload":
            del current[task.unit]
        elif task.kind == "start":
            current[task.unit] = have(task.unit, "running", hash=current[task.unit].hash, started_for=task.revision)
        else:
            current[task.unit] = have(task.unit, hash=current[task.unit].hash)
    assert plan(desired, current) == []


# --- what this machine should have ------------------------------------------------------------------------------

HERE = MachineSpec("1a2b3c4d" + "0" * 24, {"group": "web"})
THERE = "9f8e7d6c" + "0" * 24


def spec(
    name: str,
    desired: DesiredState = "launched",
    *,
    is_global: bool = False,
    group: str | None = None,
    conflicts: tuple[str, ...] = (),
) -> UnitSpec:
    metadata = {"group": frozenset({group})} if group else {}
    reqs = Requirements(machine_metadata=metadata, conflicts=conflicts, is_global=is_global)
    return UnitSpec(name, reqs, desired)


HERE_CASES: list[tuple[str, list[UnitSpec], dict[str, str], dict[str, LocalState]]] = [
    ("nothing", [], {}, {}),
    (
        "scheduled here, with its desired state",
        [spec("a.service"), spec("b.service", "loaded")],
        {"a.service": HERE.id, "b.service": HERE.id},
        {"a.service": "launched", "b.service": "loaded"},
    ),
    ("scheduled elsewhere", [spec("a.service")], {"a.service": THERE}, {}),
    ("not scheduled", [spec("a.service")], {}, {}),
    ("inactive, even if still scheduled here", [spec("a.service", "inactive")], {"a.service": HERE.id}, {}),
    ("global, metadata matches", [spec("g.service", is_global=True, group="web")], {}, {"g.service": "launched"}),
    ("global, no metadata required", [spec("g.service", "loaded", is_global=True)], {}, {"g.service": "loaded"}),
    ("global, metadata does not match", [spec("g.service", is_global=True, group="db")], {}, {}),
    ("global, inactive", [spec("g.service", "inactive", is_global=True)], {}, {}),
    (
        "global that conflicts with a unit scheduled here: the scheduled unit wins",
        [spec("a.service"), spec("g.service", is_global=True, conflicts=("a.*",))],
        {"a.service": HERE.id},
        {"a.service": "launched"},
    ),
    (
        "a scheduled unit's Conflicts also keep a global unit away",
        [spec("a.service", conflicts=("g.*",)), spec("g.service", is_global=True)],
        {"a.service": HERE.id},
        {"a.service": "launched"},
    ),
    (
        "two conflicting global units: the first by name runs",
        [spec("g2.service", is_global=True, conflicts=("g1.*",)), spec("g1.service", is_global=True)],
        {},
        {"g1.service": "launched"},
    ),
    (
        "a global unit conflicting with a unit scheduled elsewhere runs here",
        [spec("a.service"), spec("g.service", is_global=True, conflicts=("a.*",))],
        {"a.service": THERE},
        {"g.service": "launched"},
    ),
]


@pytest.mark.parametrize(("units", "schedule", "expected"), [c[1:] for c in HERE_CASES], ids=[c[0] for c in HERE_CASES])
def test_desired_here(units: list[UnitSpec], schedule: dict[str, str], expected: dict[str, LocalState]) -> None:
    assert desired_here(Snapshot(tuple(units), (), schedule), HERE) == expected
