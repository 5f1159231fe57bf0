"""The scheduler: placements per second from an empty schedule, against a trivial baseline in the same run.

Workload (issue 6's, scaled to 1,000 units over 20 machines): metadata ``zone`` (4 values, round robin) and ``disk``
(ssd/hdd alternating); units ``svc{i%100}@{i}.service``, where for i%10 in 0-2 the unit conflicts with its
template's instances, for 3-4 it needs ``zone``, for 5 it follows the previous unit, and the rest are free. The
baseline puts each unit on the least-loaded machine with no constraint checked at all: the floor any scheduler
pays for looking at every machine. Not wired into ``python -m bench`` yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fleetlet.engine import MachineSpec, Snapshot, UnitSpec, schedule
from fleetlet.units.xfleet import Requirements

ZONES = ("z0", "z1", "z2", "z3")


def workload(units: int, machines: int) -> Snapshot:
    """Issue 6's scheduler workload at the given size."""
    machine_specs = tuple(
        MachineSpec(f"{i:032x}", {"zone": ZONES[i % 4], "disk": "ssd" if i % 2 == 0 else "hdd"})
        for i in range(machines)
    )
    specs: list[UnitSpec] = []
    for i in range(units):
        name = f"svc{i % 100}@{i}.service"
        kind = i % 10
        if kind <= 2:
            reqs = Requirements(conflicts=(f"svc{i % 100}@*",))
        elif kind <= 4:
            reqs = Requirements(machine_metadata={"zone": frozenset({ZONES[i % 4]})})
        elif kind == 5:
            reqs = Requirements(machine_of=(specs[-1].name,))
        else:
            reqs = Requirements()
        specs.append(UnitSpec(name, reqs, "launched"))
    return Snapshot(tuple(specs), machine_specs)


def _baseline(snapshot: Snapshot) -> None:
    load = {m.id: 0 for m in snapshot.machines}
    for _ in snapshot.units:
        target = min(load, key=lambda machine_id: (load[machine_id], machine_id))
        load[target] += 1


def _schedule(snapshot: Snapshot) -> None:
    schedule(snapshot)


def _rate(work: Callable[[Snapshot], None], snapshot: Snapshot, rounds: int = 5) -> float:
    """Best units/s over several rounds: the least disturbed round is the closest to the code's own speed."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        work(snapshot)
        best = max(best, len(snapshot.units) / (time.perf_counter() - start))
    return best


def main() -> None:
    snapshot = workload(1000, 20)
    plan = schedule(snapshot)
    placed = sum(1 for d in plan.decisions if d.kind == "place")
    baseline = _rate(_baseline, snapshot)
    ours = _rate(_schedule, snapshot)
    print(f"scheduler: {len(snapshot.units)} units over {len(snapshot.machines)} machines, empty schedule, one core")
    print(f"  baseline  least loaded, no constraints    {baseline:>10,.0f} units/s")
    print(
        f"  schedule  fleet semantics                 {ours:>10,.0f} units/s ({placed} placed, {ours / baseline:.2f}x)"
    )


if __name__ == "__main__":
    main()
