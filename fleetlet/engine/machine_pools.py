"""Machines grouped by the units they may take, each group ordered by load, for least-loaded placement.

A unit's MachineID and MachineMetadata fix, once and for all in a pass, the machines it may ever use: its pool.
Units with the same requirement share a pool, built on first use. Each pool keeps its machines in a heap of
``(load, machine ID)``, the order in which the scheduler prefers them (least loaded, then by ID).

Loads change under the heaps, and the heaps are fixed lazily rather than on every change:

* A load that went up leaves an entry that is too low. It is noticed when it reaches the top and pushed back
  with the current load. Placing a unit raises one machine's load, so this costs nothing until it matters.
* A load that went down (a unit evicted by ``Replaces``) would leave an entry that is too high, and the machine
  would surface too late. :class:`~fleetlet.engine.placements.Placements` logs every such machine; before
  answering, a pool pushes a fresh entry for each one logged since it last looked. The stale entry, now
  above the machine's load, is dropped when it surfaces.

So every machine of a pool always has an entry no higher than its load, and the first entry at the top that
matches its machine's load is the least-loaded machine. A machine may have several entries; the extra ones are
dropped as they surface.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence, Set

from fleetlet.engine.placements import Placements
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.units.xfleet import Requirements

# What decides the machines a unit may use whatever else is placed: its MachineID and MachineMetadata.
PoolKey = tuple[str | None, tuple[tuple[str, frozenset[str]], ...]]


def pool_key(reqs: Requirements) -> PoolKey:
    return reqs.machine_id, tuple(sorted(reqs.machine_metadata.items()))


class Pool:
    """The machines a requirement admits, as a set and as a heap by load."""

    def __init__(self, machines: Iterable[str], state: Placements, everything: bool) -> None:
        self.ids = frozenset(machines)
        self.everything = everything  # the pool is every machine: no need to intersect with it
        self._state = state
        self._heap = sorted((state.load(machine_id), machine_id) for machine_id in self.ids)  # sorted: a heap
        self._lowered_seen = len(state.lowered)

    def choose(self, blockers: Sequence[Set[str]]) -> tuple[str, int] | None:
        """The least-loaded machine of the pool in none of ``blockers`` (ties by ID) and how many are; or None."""
        eligible = self._eligible(blockers)
        if not eligible:
            return None
        machine_id = self._least_loaded(blockers)
        return None if machine_id is None else (machine_id, eligible)

    def _eligible(self, blockers: Sequence[Set[str]]) -> int:
        if not blockers:
            return len(self.ids)
        if len(blockers) == 1 and self.everything:
            return len(self.ids) - len(blockers[0])
        blocked = set[str]().union(*blockers)
        return len(self.ids) - len(blocked if self.everything else blocked & self.ids)

    def _least_loaded(self, blockers: Sequence[Set[str]]) -> str | None:
        """Blocked machines met on the way are set aside and put back, so the cost is the number of blocked
        machines less loaded than the answer: few, since blockers are mostly machines just given a peer.
        """
        self._catch_up()
        heap, state = self._heap, self._state
        set_aside: list[tuple[int, str]] = []
        seen: set[str] = set()
        try:
            while heap:
                load, machine_id = heap[0]
                current = state.load(machine_id)
                if load < current:
                    heapq.heapreplace(heap, (current, machine_id))
                elif load > current or machine_id in seen:
                    heapq.heappop(heap)  # a fresher entry for this machine exists
                elif any(machine_id in blocked for blocked in blockers):
                    set_aside.append(heapq.heappop(heap))
                    seen.add(machine_id)
                else:
                    return machine_id
            return None
        finally:
            for entry in set_aside:
                heapq.heappush(heap, entry)

    def _catch_up(self) -> None:
        lowered = self._state.lowered
        for machine_id in lowered[self._lowered_seen :]:
            if machine_id in self.ids:
                heapq.heappush(self._heap, (self._state.load(machine_id), machine_id))
        self._lowered_seen = len(lowered)


class MachinePools:
    """The pool of each requirement met in a pass, built on first use."""

    def __init__(self, machines: Sequence[MachineSpec], state: Placements) -> None:
        self._machines = machines
        self._state = state
        self._pools: dict[PoolKey, Pool] = {}

    def for_requirements(self, reqs: Requirements) -> Pool:
        key = pool_key(reqs)
        pool = self._pools.get(key)
        if pool is None:
            admitted = [
                m.id for m in self._machines if reqs.machine_id_matches(m.id) and reqs.metadata_matches(m.metadata)
            ]
            pool = self._pools[key] = Pool(admitted, self._state, len(admitted) == len(self._machines))
        return pool
