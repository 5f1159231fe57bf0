"""The scheduler: a pure function from a snapshot of the cluster to the decisions that fix its schedule.

fleet's engine semantics, made exact and deterministic:

* Only units whose desired state is ``loaded`` or ``launched`` are placed; a scheduled unit that became
  ``inactive`` is unplaced.
* ``Global`` units are never placed: every agent whose machine matches runs them itself (see
  :func:`runs_global`). A schedule entry for one is removed.
* A machine ``M`` is eligible for unit ``U`` when ``MachineID`` matches (full or 8-character ID), every
  ``MachineMetadata`` key has one of its allowed values, every ``MachineOf`` peer is on ``M``, no unit on ``M``
  conflicts with ``U`` (either side's globs; never with itself) and no unit on ``M`` replaces ``U``.
* ``Replaces``: ``U`` may take a machine holding units it replaces; they move to the least-loaded other eligible
  machine, their ``MachineOf`` followers with them.
* Among eligible machines the least loaded wins (load: units scheduled there that should run, counting this
  run's placements), ties broken by machine ID.
* A unit validly scheduled stays where it is. Units are processed by name, except that ``MachineOf`` peers go
  before their followers, so a peer placed in this run counts. The same snapshot always gives the same plan.

A unit's cost does not grow with the number of machines: pools of machines by MachineID and metadata, least
loaded first (:mod:`~fleetlet.engine.machine_pools`), and the machines each glob keeps a unit off
(:mod:`~fleetlet.engine.placements`) answer where it goes. Every machine is looked at only for units with
``Replaces`` and to say why a unit cannot be placed. ``tests/unit/scheduler_reference.py`` keeps the algorithm
that checked every machine for every unit; the plans must stay the same.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from fleetlet.engine.machine_pools import MachinePools
from fleetlet.engine.placements import REPLACED_BY, Placements, fit, fits_quickly, metadata_reason, short
from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec

DecisionKind = Literal["place", "unplace", "move"]
NO_MACHINES = "no machines in the cluster"


@dataclass(frozen=True, slots=True)
class Decision:
    """One change to the schedule, with a reason fit for the log."""

    kind: DecisionKind
    unit: str
    machine: str | None  # where the unit goes; None when unplaced
    previous: str | None  # where it was recorded before; None when it was not scheduled
    reason: str


def _no_reasons() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Plan:
    """The decisions of one run, and why each unit that should run cannot (one reason per machine, by ID)."""

    decisions: tuple[Decision, ...] = ()
    unplaceable: Mapping[str, tuple[str, ...]] = field(default_factory=_no_reasons, hash=False)

    def apply(self, schedule: Mapping[str, str]) -> dict[str, str]:
        """The schedule after these decisions: what the engine writes, and what tests schedule again from."""
        result = dict(schedule)
        for decision in self.decisions:
            if decision.machine is None:
                result.pop(decision.unit, None)
            else:
                result[decision.unit] = decision.machine
        return result


@dataclass(frozen=True, slots=True)
class GlobalVerdict:
    """Whether an agent runs a global unit, and if not why; truthy when it does."""

    runs: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.runs


def runs_global(unit: UnitSpec, machine: MachineSpec, units_on_machine: Iterable[UnitSpec]) -> GlobalVerdict:
    """Whether ``machine`` runs the global ``unit``, given the units already there.

    The engine never schedules global units: each agent decides for itself with this function, as fleet's
    agents did, so a machine that joins later starts them without a decision. A verdict rather than a bare
    ``bool | str`` because a reason string would be truthy where "does not run" is meant.
    """
    reqs = unit.requirements
    if not reqs.metadata_matches(machine.metadata):
        return GlobalVerdict(False, f"machine {short(machine.id)}: {metadata_reason(unit, machine)}")
    conflicts = sorted(
        other.name
        for other in units_on_machine
        if other.name != unit.name and (reqs.conflicts_with(other.name) or other.requirements.conflicts_with(unit.name))
    )
    if conflicts:
        return GlobalVerdict(False, f"machine {short(machine.id)}: conflicts with {conflicts[0]}")
    return GlobalVerdict(True)


def schedule(snapshot: Snapshot) -> Plan:
    """Decide where every unit of ``snapshot`` should be; see the module docstring for the rules."""
    machines = sorted(snapshot.machines, key=lambda m: m.id)
    by_id = {m.id: m for m in machines}
    units = {u.name: u for u in sorted(snapshot.units, key=lambda u: u.name)}
    recorded = snapshot.schedule
    decisions: list[Decision] = []

    for name in sorted(recorded):
        unit = units.get(name)
        why = (
            "unit no longer exists"
            if unit is None
            else "desired state is inactive"
            if not unit.wants_machine
            else "global units run on every matching machine, not from the schedule"
            if unit.requirements.is_global
            else None
        )
        if why is not None:
            decisions.append(Decision("unplace", name, None, recorded[name], why))

    active = {n: u for n, u in units.items() if u.wants_machine and not u.requirements.is_global}
    order, cycles = _order(active)
    unplaceable: dict[str, tuple[str, ...]] = {}
    for name, why in sorted(cycles.items()):
        unplaceable[name] = (why,)
        if name in recorded:
            decisions.append(Decision("unplace", name, None, recorded[name], why))

    state = Placements(machines, active.values())
    left: dict[str, str] = {}  # why a recorded unit left its machine
    _keep_valid(order, active, recorded, by_id, state, left)
    placed, waiting = _place(order, active, machines, state, left)

    for name in order:
        previous, now = recorded.get(name), state.where.get(name)
        if previous == now:
            continue
        if previous is None:
            decisions.append(Decision("place", name, now, None, placed[name]))
        elif now is None:
            decisions.append(Decision("unplace", name, None, previous, f"{left[name]}; no eligible machine"))
        else:
            decisions.append(Decision("move", name, now, previous, f"{left[name]}; {placed[name]}"))
    unplaceable.update(waiting)
    return Plan(tuple(decisions), MappingProxyType(dict(sorted(unplaceable.items()))))


def _keep_valid(
    order: list[str],
    active: Mapping[str, UnitSpec],
    recorded: Mapping[str, str],
    by_id: Mapping[str, MachineSpec],
    state: Placements,
    left: dict[str, str],
) -> None:
    """Keep every recorded placement that is still valid beside the ones kept before it: no churn."""
    for name in order:
        machine_id = recorded.get(name)
        if machine_id is None:
            continue
        machine = by_id.get(machine_id)
        if machine is None:
            left[name] = f"machine {short(machine_id)} is gone"
            continue
        unit = active[name]
        if not unit.requirements.replaces and fits_quickly(unit, machine, state):
            state.add(unit, machine_id)  # the steady state: most units stay, and say nothing
            continue
        verdict = fit(unit, machine, state, frozenset())
        if isinstance(verdict, str):
            # Said the same way whichever of the two was kept first.
            left[name] = verdict if verdict.startswith(REPLACED_BY) else f"machine {short(machine_id)}: {verdict}"
            continue
        state.add(unit, machine_id)
        state.evict(verdict, name, left)


# Where a unit goes: the machine, how many machines were eligible, and the units it replaces there.
_Choice = tuple[str, int, tuple[str, ...]]


def _place(
    order: list[str],
    active: Mapping[str, UnitSpec],
    machines: list[MachineSpec],
    state: Placements,
    left: dict[str, str],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Place every unit not kept, in order; return the reason for each placement and why the rest wait."""
    index = {name: i for i, name in enumerate(order)}
    queue = [(index[name], name) for name in order if name not in state.where]
    heapq.heapify(queue)
    placed: dict[str, str] = {}
    waiting: set[str] = set()
    pools = MachinePools(machines, state)
    by_id = {m.id: m for m in machines}
    # Two machines with one ID (the engine never sends them) count twice in "least loaded of N" as the rules were
    # always applied; the indexes know each ID once, so such a snapshot is scanned throughout.
    scan_all = len(by_id) != len(machines)
    # Replaced units may be replaced again (by another replacer) so that the plan settles in one run; a cycle of
    # Replaces (a replaces b replaces c replaces a) would go round forever, so each unit is replaced at most as
    # many times as there are units, then stays where it is.
    replaced: Counter[str] = Counter()
    spent = frozenset[str]()
    while queue:
        _, name = heapq.heappop(queue)
        if name in state.where:
            continue
        unit = active[name]
        if scan_all or unit.requirements.replaces:
            choice = _scan(unit, machines, state, spent)
        else:
            choice = _choose(unit, state, pools, by_id)
        if choice is None:
            waiting.add(name)
            continue
        waiting.discard(name)
        machine_id, count, victims = choice
        state.add(unit, machine_id)
        reason = "the only eligible machine" if count == 1 else f"least loaded of {count} eligible machines"
        placed[name] = f"{reason}; replaces {', '.join(victims)}" if victims else reason
        if victims:
            replaced.update(victims)
            spent = frozenset(name for name, count in replaced.items() if count >= len(order))
            # Evicted units go elsewhere; units that were waiting may fit where they left.
            for moved in (*state.evict(victims, name, left), *waiting):
                heapq.heappush(queue, (index[moved], moved))
    # Say why against the final schedule, not the one seen mid-run, so an explanation does not change when the
    # same schedule is looked at again. Every machine still refuses a waiting unit: after its last try only
    # placements followed (an eviction would have queued it again), and a placement never makes room; the one
    # it could satisfy, a MachineOf peer, is placed before its followers.
    reasons: dict[str, tuple[str, ...]] = {}
    for name in sorted(waiting):
        verdicts = ((m, fit(active[name], m, state, spent)) for m in machines)
        found = tuple(f"machine {short(m.id)}: {why}" for m, why in verdicts if isinstance(why, str))
        reasons[name] = found or (NO_MACHINES,)
    return placed, reasons


def _choose(unit: UnitSpec, state: Placements, pools: MachinePools, by_id: Mapping[str, MachineSpec]) -> _Choice | None:
    """Where ``unit`` (without Replaces) goes, from the indexes: the fast path, independent of machine count."""
    reqs = unit.requirements
    if reqs.machine_of:
        # A follower may only go where its first peer is: one machine to check, or none.
        machine_id = state.where.get(reqs.machine_of[0])
        if machine_id is None or not fits_quickly(unit, by_id[machine_id], state):
            return None
        return machine_id, 1, ()
    found = pools.for_requirements(reqs).choose(state.blockers(unit))
    return None if found is None else (*found, ())


def _scan(unit: UnitSpec, machines: list[MachineSpec], state: Placements, spent: Set[str]) -> _Choice | None:
    """Where ``unit`` goes, every machine checked in full: for units with Replaces, which may evict."""
    eligible: list[tuple[int, str, tuple[str, ...]]] = []
    for machine in machines:
        verdict = fit(unit, machine, state, spent)
        if not isinstance(verdict, str):
            eligible.append((state.load(machine.id), machine.id, verdict))
    if not eligible:
        return None
    _, machine_id, victims = min(eligible)
    return machine_id, len(eligible), victims


def _order(active: Mapping[str, UnitSpec]) -> tuple[list[str], dict[str, str]]:
    """Units by name with every ``MachineOf`` peer before its followers; units on a peer cycle apart, with why.

    Units downstream of a cycle stay in the order (last): they wait for a peer that never comes, and say so.
    """
    followers: dict[str, list[str]] = {}
    pending = dict.fromkeys(active, 0)
    for name, unit in active.items():
        for peer in set(unit.requirements.machine_of):
            if peer in active:
                pending[name] += 1
                followers.setdefault(peer, []).append(name)
    ready = [name for name, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for follower in followers.get(name, ()):
            pending[follower] -= 1
            if pending[follower] == 0:
                heapq.heappush(ready, follower)
    stuck = sorted(name for name in active if pending[name] > 0)
    cycles: dict[str, str] = {}
    for name in stuck:
        path = _cycle(name, active, set(stuck))
        if path is not None:
            cycles[name] = "MachineOf cycle: " + " -> ".join(path)
    order.extend(name for name in stuck if name not in cycles)
    return order, cycles


def _cycle(start: str, active: Mapping[str, UnitSpec], among: set[str]) -> list[str] | None:
    """The shortest path of ``MachineOf`` peers from ``start`` back to itself, if there is one."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for peer in sorted(set(active[name].requirements.machine_of) & among):
                if peer == start:
                    path = [start, name]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path[1:]), start] if name != start else [start, start]
                if peer not in parents:
                    parents[peer] = name
                    following.append(peer)
        frontier = following
    return None
