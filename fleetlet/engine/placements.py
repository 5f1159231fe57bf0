"""The schedule one scheduling pass builds: which unit is where, with the rules that say whether one more fits.

Two ways to ask whether machine ``M`` may take unit ``U``:

* :func:`fit` applies every rule to one machine and says why not, in words: the exact rule, used for reasons,
  for units with ``Replaces`` (which may evict) and wherever a single machine is in question.
* :meth:`Placements.blockers` answers for all machines at once, for a unit without ``Replaces``: the sets of
  machines that conflict with it or hold a unit replacing it. It reads indexes kept up to date by every
  :meth:`Placements.add` and :meth:`Placements.remove`, so its cost follows the units involved, not the number
  of machines. A machine in none of the sets, that meets the unit's MachineID, metadata and MachineOf, is one
  :func:`fit` would accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from typing import NamedTuple

from fleetlet.engine.snapshot import MachineSpec, UnitSpec
from fleetlet.units.globs import GlobSet
from fleetlet.units.xfleet import SHORT_ID_LENGTH

REPLACED_BY = "replaced by "


class Blockers(NamedTuple):
    """The machines a unit may not go to, and the globs that decide it.

    ``key``: the unit's Conflicts, and the Conflicts and Replaces of others that match its name. Units with the
    same key are kept off the same machines, now and for the rest of the pass, except where a unit is removed.
    """

    key: tuple[tuple[str, ...], ...]
    machines: list[Set[str]]


# pattern -> machine ID -> how many units there count for the pattern; a machine leaves when its count is 0.
_MachineCounts = dict[str, dict[str, int]]


class Placements:
    """Units per machine during a pass, with the ones carrying Conflicts or Replaces apart, and their indexes."""

    def __init__(self, machines: Iterable[MachineSpec], units: Iterable[UnitSpec]) -> None:
        self.where: dict[str, str] = {}
        self.on: dict[str, dict[str, UnitSpec]] = {m.id: {} for m in machines}
        # Only units with globs can object to a newcomer's name: keeping them apart keeps checks short.
        self.conflicting: dict[str, dict[str, UnitSpec]] = {machine_id: {} for machine_id in self.on}
        self.replacing: dict[str, dict[str, UnitSpec]] = {machine_id: {} for machine_id in self.on}
        # Machines whose load went down, in order: least-loaded structures read it to catch up (see MachinePools).
        self.lowered: list[str] = []

        units = list(units)
        # Every glob any unit of the pass carries, so that a unit's name is matched against them once.
        self._conflict_globs = GlobSet(p for u in units for p in u.requirements.conflicts)
        self._replace_globs = GlobSet(p for u in units for p in u.requirements.replaces)
        self._named: _MachineCounts = {}  # Conflicts glob -> machines with units whose name it matches
        self._conflict_holders: _MachineCounts = {}  # Conflicts glob -> machines with units that carry it
        self._replace_holders: _MachineCounts = {}  # Replaces glob -> machines with units that carry it

    def load(self, machine_id: str) -> int:
        """Units on the machine that should run there: what least-loaded placement compares."""
        return len(self.on[machine_id])

    def add(self, unit: UnitSpec, machine_id: str) -> None:
        self.where[unit.name] = machine_id
        self.on[machine_id][unit.name] = unit
        if unit.requirements.conflicts:
            self.conflicting[machine_id][unit.name] = unit
        if unit.requirements.replaces:
            self.replacing[machine_id][unit.name] = unit
        self._index(unit, machine_id, 1)

    def remove(self, name: str) -> None:
        machine_id = self.where.pop(name)
        unit = self.on[machine_id].pop(name)
        self.conflicting[machine_id].pop(name, None)
        self.replacing[machine_id].pop(name, None)
        self._index(unit, machine_id, -1)
        self.lowered.append(machine_id)

    def _index(self, unit: UnitSpec, machine_id: str, step: int) -> None:
        """Count ``unit`` in (step 1) or out of (step -1) every index, on ``machine_id``."""
        for pattern in set(unit.requirements.conflicts):
            _count(self._conflict_holders, pattern, machine_id, step)
        for pattern in set(unit.requirements.replaces):
            _count(self._replace_holders, pattern, machine_id, step)
        for pattern in self._conflict_globs.matching(unit.name):
            _count(self._named, pattern, machine_id, step)

    def blockers(self, unit: UnitSpec) -> Blockers:
        """The machines that may not take ``unit`` (which has no Replaces and is not placed), as a few sets.

        A machine is in one when a unit there matches one of ``unit``'s Conflicts, carries a Conflicts matching
        ``unit``'s name, or replaces it. The sets are live views: read them before the next change.
        """
        forward = tuple(sorted(set(unit.requirements.conflicts)))
        backward = self._conflict_globs.matching(unit.name)
        replacers = self._replace_globs.matching(unit.name)
        found: list[Set[str]] = []
        for pattern in forward:
            found.extend(_machines(self._named, pattern))
        for pattern in backward:
            found.extend(_machines(self._conflict_holders, pattern))
        for pattern in replacers:
            found.extend(_machines(self._replace_holders, pattern))
        return Blockers((forward, backward, replacers), found)

    def evict(self, victims: Iterable[str], by: str, left: dict[str, str]) -> list[str]:
        """Remove replaced units and, transitively, their followers on the same machine; return all removed."""
        removed: list[str] = []
        for victim in victims:
            left[victim] = f"{REPLACED_BY}{by}"
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
                        left[follower] = f"machine {short(machine_id)}: MachineOf peer {peer} is not scheduled here"
                        removed.append(follower)
                        gone.append(follower)
        return removed


def _count(table: _MachineCounts, pattern: str, machine_id: str, step: int) -> None:
    machines = table.setdefault(pattern, {})
    count = machines.get(machine_id, 0) + step
    if count:
        machines[machine_id] = count
    else:
        del machines[machine_id]


def _machines(table: _MachineCounts, pattern: str) -> list[Set[str]]:
    machines = table.get(pattern)
    return [machines.keys()] if machines else []


def fit(unit: UnitSpec, machine: MachineSpec, state: Placements, spent: Set[str]) -> str | tuple[str, ...]:
    """Why ``machine`` cannot take ``unit`` now, or the units there it would replace (usually none).

    ``spent``: units replaced so often in this pass that they may not be replaced again.
    """
    reqs = unit.requirements
    if not reqs.machine_id_matches(machine.id):
        return f"MachineID requires {reqs.machine_id}"
    if not reqs.metadata_matches(machine.metadata):
        return metadata_reason(unit, machine)
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
        return f"{REPLACED_BY}{replacers[0]}"
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


def fits_quickly(unit: UnitSpec, machine: MachineSpec, state: Placements) -> bool:
    """Whether :func:`fit` would accept ``machine`` for ``unit`` (without Replaces), from the indexes."""
    reqs = unit.requirements
    here = state.on[machine.id]
    return (
        reqs.machine_id_matches(machine.id)
        and reqs.metadata_matches(machine.metadata)
        and all(peer in here for peer in reqs.machine_of)
        and not any(machine.id in blocked for blocked in state.blockers(unit).machines)
    )


def metadata_reason(unit: UnitSpec, machine: MachineSpec) -> str:
    """The first required key (by name) that the machine lacks, with every value that would do."""
    for key, allowed in sorted(unit.requirements.machine_metadata.items()):
        if machine.metadata.get(key) not in allowed:
            wanted = " or ".join(f"{key}={value}" for value in sorted(allowed))
            return f"metadata {wanted} not satisfied"
    return "metadata satisfied"  # not reached: called only when the metadata does not match


def short(machine_id: str) -> str:
    return machine_id[:SHORT_ID_LENGTH]
