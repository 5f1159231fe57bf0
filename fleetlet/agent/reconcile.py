"""The agent's reconciler: what this machine should run against what it runs, as a list of tasks.

Two pure functions, like fleet's agent reconciler: :func:`desired_here` says what this machine should have (its
part of the schedule, and the global units whose requirements it meets), and ``plan(desired, current)`` says
what to do about it. The supervisor carries the tasks out, and every task has a human reason that also goes to
the log.

Global units are never scheduled: each agent decides for itself (fleet's agents did the same), so a machine that
joins, or whose metadata changes, starts or stops them without a decision by the leader. A global unit runs here
when the machine's metadata matches and it conflicts with no unit already here -- the scheduled units first, then
the other global units in name order.

The rules, per unit:

- desired here, not present: ``load``, then ``start`` if it is to be launched.
- present, no longer desired here (unscheduled, moved away, inactive, destroyed): ``unload``. The supervisor's
  unload stops the unit before dropping its actor, so no separate ``stop`` is planned.
- present with another hash: ``replace`` -- one task that stops the old version, drops its actor and loads the
  new one (not started) -- then ``start`` if it is to be launched. One task rather than unload+load so that a
  supervisor carrying out a plan half-way never leaves the unit absent with nothing planned to bring it back.
- desired loaded, current active/activating/reloading (including waiting to auto-restart): ``stop``.
- desired launched, current inactive (dead): ``start``. As fleet's agent did: the unit ended cleanly or was
  stopped behind fleetlet's back, and ``launched`` means running. Crashes are ``Restart=``'s business.
- desired launched, current failed: ``start`` only once per desired-state revision. The actor treats every
  ``Start`` as a manual start and resets the start limit, so a reconciler that started failed units on each pass
  would defeat ``StartLimitBurst=``, turning ``start-limit-hit`` into a tight loop. fleet relied on systemd
  refusing such a start until ``reset-failed``; here the supervisor remembers the revision it last started the
  unit for (``CurrentUnit.started_for``), and a new ``fleetctl start`` (a new revision) tries again.
- deactivating: nothing; the unit is on its way to a state the next pass can judge.

Order: every ``stop``, ``unload`` and ``replace`` first, then ``load``, then ``start``, each group by unit name.
Conflicting units therefore never run together while one takes the other's place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from fleetlet.engine.scheduler import runs_global
from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec
from fleetlet.service.states import ActiveState, Result, SubState

TaskKind: TypeAlias = Literal["stop", "unload", "replace", "load", "start"]
LocalState: TypeAlias = Literal["loaded", "launched"]

# Down before up, so a machine never runs two units that conflict while one replaces the other.
_RANK: dict[TaskKind, int] = {"stop": 0, "unload": 0, "replace": 0, "load": 1, "start": 2}
_RUNNING: frozenset[ActiveState] = frozenset({"active", "activating", "reloading"})


@dataclass(frozen=True, slots=True)
class DesiredUnit:
    """What the registry says this machine should have: a scheduled unit, or a global unit that runs here.

    ``revision`` is the registry revision of the unit's record: it changes whenever the user sets its desired
    state again, which is what allows one more start of a failed unit.
    """

    name: str
    hash: str
    state: LocalState
    revision: int = 0


@dataclass(frozen=True, slots=True)
class CurrentUnit:
    """What this machine's actor for a unit reports, and the revision the supervisor last started it for."""

    name: str
    hash: str
    active: ActiveState = "inactive"
    sub: SubState = "dead"
    result: Result = "success"
    started_for: int | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """One step for the supervisor; ``revision`` is the desired revision a ``start`` is made for."""

    kind: TaskKind
    unit: str
    reason: str
    revision: int = 0


def desired_here(snapshot: Snapshot, machine: MachineSpec) -> dict[str, LocalState]:
    """The units ``machine`` should have and whether to run them: its schedule entries, then global units."""
    wanted: dict[str, LocalState] = {}
    here: list[UnitSpec] = []
    globals_: list[UnitSpec] = []
    for unit in sorted(snapshot.units, key=lambda u: u.name):
        if unit.desired == "inactive":
            continue
        if unit.requirements.is_global:
            globals_.append(unit)
        elif snapshot.schedule.get(unit.name) == machine.id:
            wanted[unit.name] = unit.desired
            here.append(unit)
    for unit in globals_:
        if runs_global(unit, machine, here):
            wanted[unit.name] = "launched" if unit.desired == "launched" else "loaded"
            here.append(unit)
    return wanted


def plan(desired: Mapping[str, DesiredUnit], current: Mapping[str, CurrentUnit]) -> list[Task]:
    """The tasks that take this machine from ``current`` to ``desired``; see the module docstring."""
    tasks: list[Task] = []
    for name in sorted(desired.keys() | current.keys()):
        tasks.extend(_unit_tasks(name, desired.get(name), current.get(name)))
    return sorted(tasks, key=lambda task: (_RANK[task.kind], task.unit))


def _unit_tasks(name: str, want: DesiredUnit | None, have: CurrentUnit | None) -> list[Task]:
    if want is None:
        assert have is not None
        return [Task("unload", name, f"{name}: no longer desired here, current {_describe(have)}")]
    if have is None:
        tasks = [Task("load", name, f"{name}: desired {want.state}, not loaded here")]
        if want.state == "launched":
            tasks.append(Task("start", name, f"{name}: desired launched, current loaded", want.revision))
        return tasks
    if have.hash != want.hash:
        tasks = [Task("replace", name, f"{name}: desired hash {want.hash[:7]}, current hash {have.hash[:7]}")]
        if want.state == "launched":
            tasks.append(Task("start", name, f"{name}: desired launched, current replaced", want.revision))
        return tasks
    if want.state == "loaded":
        if have.active in _RUNNING:
            return [Task("stop", name, f"{name}: desired loaded, current {_describe(have)}")]
        return []
    if have.active == "inactive":
        return [Task("start", name, f"{name}: desired launched, current {_describe(have)}", want.revision)]
    if have.active == "failed" and have.started_for != want.revision:
        reason = f"{name}: desired launched, current failed ({have.result}), not started for revision {want.revision}"
        return [Task("start", name, reason, want.revision)]
    return []


def _describe(unit: CurrentUnit) -> str:
    return f"{unit.active} {unit.sub}"
