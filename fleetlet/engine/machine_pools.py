"""Machines grouped by the units they may take, each group ordered by load, for least-loaded placement.

A unit's MachineID and MachineMetadata fix, once and for all in a pass, the machines it may ever use: its pool.
Units with the same requirement share a pool, built on first use. A pool keeps its machines in a heap of
``(load, machine ID)``, the order in which the scheduler prefers them (least loaded, then by ID).

Loads change under the heaps, and the heaps are fixed lazily rather than on every change:

* A load that went up leaves an entry that is too low. It is noticed when it reaches the top and pushed back
  with the current load. Placing a unit raises one machine's load, so this costs nothing until it matters.
* A load that went down (a unit evicted by ``Replaces``) would leave an entry that is too high, and the machine
  would surface too late. :class:`~fleetlet.engine.placements.Placements` logs every such machine; before
  answering, a heap pushes a fresh entry for each one logged since it last looked. The stale entry, now
  above the machine's load, is dropped when it surfaces.

So every machine of a heap always has an entry no higher than its load, and the first entry at the top that
matches its machine's load is the least-loaded machine. A machine may have several entries; the extra ones are
dropped as they surface.

Conflicts make a second problem. The instances of a template that conflict with each other (``Conflicts=web@*``)
fill the least-loaded machines first, so the next instance finds them all at the top of the heap, blocked, and
would step over more of them each time. Blocked machines stay blocked for the rest of the pass unless a unit is
removed (which the log above reports), so units with the same :class:`~fleetlet.engine.placements.Blockers`
key get a heap of their own, which drops blocked machines for good. It is built only for a key whose units have
already stepped over as many machines as the pool holds, so that one-off keys never pay for a heap.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence, Set

from fleetlet.engine.placements import Blockers, Placements
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.units.xfleet import Requirements

# What decides the machines a unit may use whatever else is placed: its MachineID and MachineMetadata.
PoolKey = tuple[str | None, tuple[tuple[str, frozenset[str]], ...]]


def pool_key(reqs: Requirements) -> PoolKey:
    return reqs.machine_id, tuple(sorted(reqs.machine_metadata.items()))


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


class Pool:
    """The machines a requirement admits: a set, a heap by load, and heaps for keys of blockers met often."""

    def __init__(self, machines: Iterable[str], state: Placements, everything: bool) -> None:
        self.ids = frozenset(machines)
        self.everything = everything  # the pool is every machine: no need to intersect with it
        self._state = state
        self._heap = _LoadHeap(self.ids, self.ids, state)
        self._narrowed: dict[tuple[tuple[str, ...], ...], _LoadHeap] = {}
        self._stepped_over: Counter[tuple[tuple[str, ...], ...]] = Counter()

    def choose(self, blockers: Blockers) -> tuple[str, int] | None:
        """The least-loaded machine of the pool not blocked (ties by ID) and how many are eligible; or None."""
        eligible = self._eligible(blockers.machines)
        if not eligible:
            return None
        narrowed = self._narrowed.get(blockers.key)
        if narrowed is not None:
            return narrowed.least(blockers.machines, drop_blocked=True)[0], eligible
        machine_id, stepped_over = self._heap.least(blockers.machines, drop_blocked=False)
        if stepped_over:
            self._stepped_over[blockers.key] += stepped_over
            if self._stepped_over[blockers.key] >= len(self.ids):
                unblocked = self.ids.difference(*blockers.machines)
                self._narrowed[blockers.key] = _LoadHeap(unblocked, self.ids, self._state)
        return machine_id, eligible

    def _eligible(self, blockers: Sequence[Set[str]]) -> int:
        if not blockers:
            return len(self.ids)
        if len(blockers) == 1 and self.everything:
            return len(self.ids) - len(blockers[0])
        blocked = set[str]().union(*blockers)
        return len(self.ids) - len(blocked if self.everything else blocked & self.ids)


class _LoadHeap:
    """``(load, machine ID)`` entries for some machines of a pool, kept right lazily (see the module docstring)."""

    def __init__(self, machines: Iterable[str], pool: Set[str], state: Placements) -> None:
        self._heap = sorted((state.load(machine_id), machine_id) for machine_id in machines)  # sorted: a heap
        self._pool = pool
        self._state = state
        self._lowered_seen = len(state.lowered)

    def least(self, blockers: Sequence[Set[str]], *, drop_blocked: bool) -> tuple[str, int]:
        """The least-loaded machine in none of ``blockers``, which the caller knows exists, and how many blocked
        machines were stepped over to find it.

        Blocked machines are dropped for good when ``drop_blocked`` (the heap of one blockers key), else set
        aside and put back.
        """
        self._catch_up()
        heap, state = self._heap, self._state
        set_aside: list[tuple[int, str]] = []
        seen: set[str] = set()
        stepped_over = 0
        try:
            while True:
                load, machine_id = heap[0]
                current = state.load(machine_id)
                if any(machine_id in blocked for blocked in blockers):
                    stepped_over += 1
                    if drop_blocked or machine_id in seen:
                        heapq.heappop(heap)
                    else:
                        set_aside.append(heapq.heappop(heap))
                        seen.add(machine_id)
                elif load < current:
                    heapq.heapreplace(heap, (current, machine_id))
                elif load > current:
                    heapq.heappop(heap)  # a fresher entry for this machine exists
                else:
                    return machine_id, stepped_over
        finally:
            for entry in set_aside:
                heapq.heappush(heap, entry)

    def _catch_up(self) -> None:
        lowered = self._state.lowered
        for machine_id in lowered[self._lowered_seen :]:
            if machine_id in self._pool:
                heapq.heappush(self._heap, (self._state.load(machine_id), machine_id))
        self._lowered_seen = len(lowered)
