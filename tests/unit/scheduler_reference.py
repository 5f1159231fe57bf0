"""The scheduler as it was before issue 6's indexes: every machine checked for every unit. Tests only.

A verbatim copy of ``fleetlet/engine/scheduler.py``'s algorithm at the commit before the indexes, kept as the
oracle that ``test_scheduler_equivalence.py`` holds the fast scheduler to: the same snapshot must give the same
plan, decision for decision and reason for reason. Its data types (``Decision``, ``Plan``) are the real ones so
that plans compare directly. Do not optimise it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from types import MappingProxyType

from fleetlet.engine.scheduler import NO_MACHINES, Decision, Plan
from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec
from fleetlet.units.xfleet import SHORT_ID_LENGTH

_REPLACED_BY = "replaced by "


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

    state = _State(machines)
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


class _State:
    """The schedule being built: units per machine, with the ones carrying Conflicts or Replaces apart."""

    def __init__(self, machines: Iterable[MachineSpec]) -> None:
        self.where: dict[str, str] = {}
        self.on: dict[str, dict[str, UnitSpec]] = {m.id: {} for m in machines}
        # Only units with globs can object to a newcomer's name: keeping them apart keeps checks short.
        self.conflicting: dict[str, dict[str, UnitSpec]] = {m.id: {} for m in machines}
        self.replacing: dict[str, dict[str, UnitSpec]] = {m.id: {} for m in machines}

    def add(self, unit: UnitSpec, machine_id: str) -> None:
        self.where[unit.name] = machine_id
        self.on[machine_id][unit.name] = unit
        if unit.requirements.conflicts:
            self.conflicting[machine_id][unit.name] = unit
        if unit.requirements.replaces:
            self.replacing[machine_id][unit.name] = unit

    def remove(self, name: str) -> None:
        machine_id = self.where.pop(name)
        for table in (self.on, self.conflicting, self.replacing):
            table[machine_id].pop(name, None)

    def evict(self, victims: Iterable[str], by: str, left: dict[str, str]) -> list[str]:
        """Remove replaced units and, transitively, their followers on the same machine; return all removed."""
        removed: list[str] = []
        for victim in victims:
            left[victim] = f"{_REPLACED_BY}{by}"
            if victim in removed:
                continue  # also a follower of a victim, already gone
            machine_id = self.where[victim]
            self.remove(victim)
            removed.append(victim)
            gone = [victim]
            while gone:
                peer = gone.pop()
                for follower in sorted(self.on[machine_id]):
                    if peer in self.on[machine_id][follower].requirements.machine_of:
                        self.remove(follower)
                        left[follower] = f"machine {_short(machine_id)}: MachineOf peer {peer} is not scheduled here"
                        removed.append(follower)
                        gone.append(follower)
        return removed


def _keep_valid(
    order: list[str],
    active: Mapping[str, UnitSpec],
    recorded: Mapping[str, str],
    by_id: Mapping[str, MachineSpec],
    state: _State,
    left: dict[str, str],
) -> None:
    """Keep every recorded placement that is still valid beside the ones kept before it: no churn."""
    for name in order:
        machine_id = recorded.get(name)
        if machine_id is None:
            continue
        machine = by_id.get(machine_id)
        if machine is None:
            left[name] = f"machine {_short(machine_id)} is gone"
            continue
        fit = _fit(active[name], machine, state, frozenset())
        if isinstance(fit, str):
            # Said the same way whichever of the two was kept first.
            left[name] = fit if fit.startswith(_REPLACED_BY) else f"machine {_short(machine_id)}: {fit}"
            continue
        state.add(active[name], machine_id)
        state.evict(fit, name, left)


def _place(
    order: list[str],
    active: Mapping[str, UnitSpec],
    machines: list[MachineSpec],
    state: _State,
    left: dict[str, str],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Place every unit not kept, in order; return the reason for each placement and why the rest wait."""
    index = {name: i for i, name in enumerate(order)}
    queue = [(index[name], name) for name in order if name not in state.where]
    heapq.heapify(queue)
    placed: dict[str, str] = {}
    waiting: dict[str, tuple[str, ...]] = {}
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
        eligible: list[tuple[int, str, tuple[str, ...]]] = []
        reasons: list[str] = []
        for machine in machines:
            fit = _fit(unit, machine, state, spent)
            if isinstance(fit, str):
                reasons.append(f"machine {_short(machine.id)}: {fit}")
            else:
                eligible.append((len(state.on[machine.id]), machine.id, fit))
        if not eligible:
            waiting[name] = tuple(reasons) or (NO_MACHINES,)
            continue
        waiting.pop(name, None)
        _, machine_id, victims = min(eligible)
        state.add(unit, machine_id)
        count = len(eligible)
        reason = "the only eligible machine" if count == 1 else f"least loaded of {count} eligible machines"
        placed[name] = f"{reason}; replaces {', '.join(victims)}" if victims else reason
        if victims:
            replaced.update(victims)
            spent = frozenset(name for name, count in replaced.items() if count >= len(order))
            # Evicted units go elsewhere; units that were waiting may fit where they left.
            for moved in (*state.evict(victims, name, left), *waiting):
                heapq.heappush(queue, (index[moved], moved))
    # Say why against the final schedule, not the one seen mid-run, so an explanation does not change when the
    # same schedule is looked at again.
    for name in waiting:
        fits = [_fit(active[name], machine, state, spent) for machine in machines]
        if all(isinstance(fit, str) for fit in fits):
            waiting[name] = tuple(f"machine {_short(m.id)}: {fit}" for m, fit in zip(machines, fits, strict=True)) or (
                NO_MACHINES,
            )
    return placed, waiting


def _fit(unit: UnitSpec, machine: MachineSpec, state: _State, spent: Set[str]) -> str | tuple[str, ...]:
    """Why ``machine`` cannot take ``unit`` now, or the units there it would replace (usually none)."""
    reqs = unit.requirements
    if not reqs.machine_id_matches(machine.id):
        return f"MachineID requires {reqs.machine_id}"
    if not reqs.metadata_matches(machine.metadata):
        return _metadata_reason(unit, machine)
    here = state.on[machine.id]
    for peer in reqs.machine_of:
        if peer not in here:
            return f"MachineOf peer {peer} is not scheduled here"
    replacers = sorted(
        other.name
        for other in state.replacing[machine.id].values()
        if other.name != unit.name
        and other.requirements.replaces_unit(unit.name)
        and not reqs.replaces_unit(other.name)
    )
    if replacers:
        return f"{_REPLACED_BY}{replacers[0]}"
    victims: tuple[str, ...] = ()
    if reqs.replaces:
        # fleet ignored a pair that replace each other, rather than evicting back and forth; so does fleetlet.
        victims = tuple(
            sorted(
                name
                for name, other in here.items()
                if name != unit.name and reqs.replaces_unit(name) and not other.requirements.replaces_unit(unit.name)
            )
        )
        moved = [victim for victim in victims if victim in spent]
        if moved:
            return f"would replace {moved[0]}, replaced too often in this run (a cycle of Replaces?)"
    conflicts = (
        [name for name in here if name != unit.name and name not in victims and reqs.conflicts_with(name)]
        if reqs.conflicts
        else []
    )
    conflicts.extend(
        name
        for name, other in state.conflicting[machine.id].items()
        if name != unit.name and name not in victims and other.requirements.conflicts_with(unit.name)
    )
    if conflicts:
        return f"conflicts with {min(conflicts)}"
    return victims


def _metadata_reason(unit: UnitSpec, machine: MachineSpec) -> str:
    """The first required key (by name) that the machine lacks, with every value that would do."""
    for key, allowed in sorted(unit.requirements.machine_metadata.items()):
        if machine.metadata.get(key) not in allowed:
            wanted = " or ".join(f"{key}={value}" for value in sorted(allowed))
            return f"metadata {wanted} not satisfied"
    return "metadata satisfied"  # not reached: called only when the metadata does not match


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


def _short(machine_id: str) -> str:
    return machine_id[:SHORT_ID_LENGTH]
