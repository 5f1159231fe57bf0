"""The indexed scheduler decides exactly what the scan-everything one did: same machines, same reasons.

``scheduler_reference.py`` is the algorithm before the indexes. Random snapshots mix every rule (metadata with
several allowed values and missing keys, Conflicts and Replaces globs of every shape, MachineOf chains and cycles,
MachineID full and short, global and inactive units, recorded placements valid, invalid and on gone machines) over
few machines, so that rules collide often; a few fixed larger cases add load and ties.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_scheduler import workload
from fleetlet.engine import MachineSpec, Snapshot, UnitSpec, schedule
from fleetlet.units.xfleet import Requirements
from tests.unit import scheduler_reference

# Two IDs share their first 8 characters, so a short MachineID matches both.
MACHINE_IDS = [f"{i:02x}" * 16 for i in range(1, 7)] + ["0101010199999999" + "9" * 16]
GONE = "f" * 32
NAMES = [f"{template}@{i}.service" for template in ("web", "db", "cache") for i in range(4)] + [
    "side.service",
    "app.service",
    "web.service",
]
GLOBS = [
    "web@*",
    "db@*",
    "cache@*",
    "*",
    "*.service",
    "w?b@*",
    "[wd]*@1.service",
    "db@[0-2].service",
    "app.service",
    "web@1.service",
    "*@3.service",
    "nothing.service",
]
ZONES = ["a", "b", "c"]


@st.composite
def requirements(draw: st.DrawFn, name: str) -> Requirements:
    metadata: dict[str, frozenset[str]] = {}
    if draw(st.booleans()):
        metadata["zone"] = frozenset(draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        metadata[draw(st.sampled_from(["disk", "missing"]))] = frozenset({draw(st.sampled_from(["ssd", "hdd"]))})
    machine_id = None
    if draw(st.integers(0, 5)) == 0:
        machine_id = draw(st.sampled_from([*MACHINE_IDS, GONE]))[: draw(st.sampled_from([8, 32]))]
    return Requirements(
        machine_id=machine_id,
        machine_of=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True)))
        if draw(st.integers(0, 3)) == 0
        else (),
        machine_metadata=metadata,
        conflicts=tuple(draw(st.lists(st.sampled_from([*GLOBS, name.partition("@")[0] + "@*"]), max_size=2))),
        replaces=tuple(draw(st.lists(st.sampled_from(GLOBS), max_size=2))) if draw(st.integers(0, 3)) == 0 else (),
        is_global=draw(st.integers(0, 9)) == 0,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    ids = draw(st.lists(st.sampled_from(MACHINE_IDS), unique=True, max_size=6))
    if ids and draw(st.integers(0, 19)) == 0:
        ids.append(ids[0])  # a duplicate ID: the engine never sends one, the scheduler still must not differ
    machines = tuple(
        MachineSpec(
            machine_id,
            {
                key: value
                for key, value in (
                    ("zone", draw(st.sampled_from([*ZONES, ""]))),
                    ("disk", draw(st.sampled_from(["ssd", "hdd", ""]))),
                )
                if value
            },
        )
        for machine_id in ids
    )
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    units = tuple(
        UnitSpec(name, draw(requirements(name)), draw(st.sampled_from(["inactive", "loaded", "launched", "launched"])))
        for name in names
    )
    recorded = draw(
        st.dictionaries(
            st.sampled_from([*names, "gone.service"]), st.sampled_from([*MACHINE_IDS, GONE]), max_size=len(names)
        )
    )
    return Snapshot(units, machines, recorded)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_same_plan_as_the_reference(snapshot: Snapshot) -> None:
    assert schedule(snapshot) == scheduler_reference.schedule(snapshot)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_same_plan_as_the_reference_when_scheduling_again(snapshot: Snapshot) -> None:
    """From the schedule the first plan left: the steady state the engine runs in most passes."""
    settled = scheduler_reference.schedule(snapshot).apply(snapshot.schedule)
    again = Snapshot(snapshot.units, snapshot.machines, settled)
    assert schedule(again) == scheduler_reference.schedule(again)


def _crowded(seed: int, units: int, machines: int) -> Snapshot:
    """Many units over few machines, with a random half already placed: loads, ties and full machines."""
    rng = random.Random(seed)
    machine_specs = tuple(
        MachineSpec(f"{i:032x}", {"zone": rng.choice(ZONES), "disk": rng.choice(["ssd", "hdd"])})
        for i in range(machines)
    )
    specs: list[UnitSpec] = []
    for i in range(units):
        name = f"t{i % 13}@{i}.service"
        kind = rng.randrange(8)
        reqs = Requirements()
        if kind == 0:
            reqs = Requirements(conflicts=(f"t{i % 13}@*",))
        elif kind == 1:
            reqs = Requirements(machine_metadata={"zone": frozenset(rng.sample(ZONES, 2))})
        elif kind == 2 and specs:
            reqs = Requirements(machine_of=(rng.choice(specs).name,))
        elif kind == 3:
            reqs = Requirements(conflicts=(f"t{rng.randrange(13)}@{rng.randrange(units)}.service", "x*"))
        elif kind == 4 and i % 17 == 0:
            reqs = Requirements(replaces=(f"t{rng.randrange(13)}@*",))
        specs.append(UnitSpec(name, reqs, "launched"))
    recorded = {u.name: rng.choice(machine_specs).id for u in specs if rng.random() < 0.5}
    return Snapshot(tuple(specs), machine_specs, recorded)


@pytest.mark.parametrize(
    "snapshot",
    [
        workload(600, 20),
        workload(300, 7),
        workload(40, 1000),
        _crowded(1, 400, 9),
        _crowded(2, 400, 30),
        _crowded(3, 200, 3),
    ],
    ids=["workload-600x20", "workload-300x7", "workload-40x1000", "crowded-1", "crowded-2", "crowded-3"],
)
def test_same_plan_as_the_reference_at_size(snapshot: Snapshot) -> None:
    plan = schedule(snapshot)
    assert plan == scheduler_reference.schedule(snapshot)
    settled = Snapshot(snapshot.units, snapshot.machines, plan.apply(snapshot.schedule))
    assert schedule(settled) == scheduler_reference.schedule(settled)
