"""The scheduler, rule by rule: exact decisions and exact reasons, from tables."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlet.engine import Decision, MachineSpec, Snapshot, UnitSpec, runs_global, schedule
from fleetlet.engine.snapshot import DesiredState
from fleetlet.units.check import load_unit
from fleetlet.units.xfleet import Requirements
from tests.fleet_units import HELLO_WORLD

A = "1a2b3c4d" + "a" * 24
B = "2b3c4d5e" + "b" * 24
C = "3c4d5e6f" + "c" * 24


def machine(machine_id: str, **metadata: str) -> MachineSpec:
    return MachineSpec(machine_id, metadata)


def unit(name: str, desired: DesiredState = "launched", **requirements: Any) -> UnitSpec:
    return UnitSpec(name, Requirements(**requirements), desired)


def hello(name: str = "hello_world@1.service") -> UnitSpec:
    """fleet's hello_world, read from its unit file exactly as fleet published it."""
    return UnitSpec(name, load_unit(HELLO_WORLD, name).requirements, "launched")


def place(name: str, to: str, reason: str) -> Decision:
    return Decision("place", name, to, None, reason)


def move(name: str, source: str, to: str, reason: str) -> Decision:
    return Decision("move", name, to, source, reason)


def unplace(name: str, source: str, reason: str) -> Decision:
    return Decision("unplace", name, None, source, reason)


WEB = {"group": "hw_webservers"}
LEAST_3 = "least loaded of 3 eligible machines"
LEAST_2 = "least loaded of 2 eligible machines"
ONLY = "the only eligible machine"

CASES = [
    pytest.param(
        Snapshot((unit("a.service"),), (machine(B), machine(A), machine(C))),
        [place("a.service", A, LEAST_3)],
        {},
        id="ties-broken-by-machine-id",
    ),
    pytest.param(
        Snapshot((unit("a.service"), unit("b.service")), (machine(A), machine(B)), {"b.service": A}),
        [place("a.service", B, "least loaded of 2 eligible machines")],
        {},
        id="least-loaded-first",
    ),
    pytest.param(
        Snapshot((unit("a.service"), unit("b.service", "inactive")), (machine(A), machine(B)), {"b.service": A}),
        [unplace("b.service", A, "desired state is inactive"), place("a.service", A, LEAST_2)],
        {},
        id="inactive-unplaced-and-not-counted",
    ),
    pytest.param(
        Snapshot((unit("a.service", "inactive"), unit("b.service", "loaded")), (machine(A),)),
        [place("b.service", A, ONLY)],
        {},
        id="only-loaded-and-launched-placed",
    ),
    pytest.param(
        Snapshot((unit("a.service"),), ()),
        [],
        {"a.service": ("no machines in the cluster",)},
        id="no-machines",
    ),
    pytest.param(
        Snapshot((unit("a.service"),), (machine(A), machine(B)), {"a.service": B}),
        [],
        {},
        id="stable-no-churn",
    ),
    pytest.param(
        Snapshot((), (machine(A),), {"gone.service": A}),
        [unplace("gone.service", A, "unit no longer exists")],
        {},
        id="destroyed-unit-unplaced",
    ),
    pytest.param(
        Snapshot((hello("hello_world.service"),), (machine(A), machine(B, **WEB), machine(C))),
        [place("hello_world.service", B, ONLY)],
        {},
        id="hello-world-metadata",
    ),
    pytest.param(
        Snapshot((hello("hello_world.service"),), (machine(A, group="db"), machine(B))),
        [],
        {
            "hello_world.service": (
                "machine 1a2b3c4d: metadata group=hw_webservers not satisfied",
                "machine 2b3c4d5e: metadata group=hw_webservers not satisfied",
            )
        },
        id="hello-world-nowhere",
    ),
    pytest.param(
        Snapshot(
            tuple(hello(f"hello_world@{i}.service") for i in (1, 2, 3)),
            (machine(A, **WEB), machine(B, **WEB), machine(C)),
        ),
        [place("hello_world@1.service", A, LEAST_2), place("hello_world@2.service", B, ONLY)],
        {
            "hello_world@3.service": (
                "machine 1a2b3c4d: conflicts with hello_world@1.service",
                "machine 2b3c4d5e: conflicts with hello_world@2.service",
                "machine 3c4d5e6f: metadata group=hw_webservers not satisfied",
            )
        },
        id="hello-world-instances-spread-with-conflicts",
    ),
    pytest.param(
        Snapshot((unit("a.service"), unit("b.service", conflicts=("a.*",))), (machine(A),), {"a.service": A}),
        [],
        {"b.service": ("machine 1a2b3c4d: conflicts with a.service",)},
        id="conflict-from-newcomer-globs",
    ),
    pytest.param(
        Snapshot((unit("a.service", conflicts=("b.*",)), unit("b.service")), (machine(A),), {"a.service": A}),
        [],
        {"b.service": ("machine 1a2b3c4d: conflicts with a.service",)},
        id="conflict-is-symmetric",
    ),
    pytest.param(
        Snapshot((unit("a.service", conflicts=("a.*",)),), (machine(A),), {"a.service": A}),
        [],
        {},
        id="never-conflicts-with-itself",
    ),
    pytest.param(
        Snapshot(
            (unit("a.service"), unit("b.service", conflicts=("a.*",))),
            (machine(A), machine(B)),
            {"a.service": A, "b.service": A},
        ),
        [move("b.service", A, B, f"machine 1a2b3c4d: conflicts with a.service; {ONLY}")],
        {},
        id="existing-conflict-later-unit-moves",
    ),
    pytest.param(
        Snapshot((unit("a.service", machine_id="2b3c4d5e"),), (machine(A), machine(B))),
        [place("a.service", B, ONLY)],
        {},
        id="machine-id-short",
    ),
    pytest.param(
        Snapshot((unit("a.service", machine_id=C),), (machine(A), machine(B))),
        [],
        {"a.service": (f"machine 1a2b3c4d: MachineID requires {C}", f"machine 2b3c4d5e: MachineID requires {C}")},
        id="machine-id-absent",
    ),
    pytest.param(
        Snapshot(
            (unit("a.service", machine_metadata={"disk": {"ssd", "nvme"}}),), (machine(A), machine(B, disk="nvme"))
        ),
        [place("a.service", B, ONLY)],
        {},
        id="metadata-any-value-within-key",
    ),
    pytest.param(
        Snapshot(
            (unit("a.service", machine_metadata={"disk": {"ssd"}, "zone": {"z1", "z2"}}),),
            (machine(A, disk="ssd", zone="z3"),),
        ),
        [],
        {"a.service": ("machine 1a2b3c4d: metadata zone=z1 or zone=z2 not satisfied",)},
        id="metadata-every-key",
    ),
    pytest.param(
        Snapshot(
            (unit("a.service", machine_metadata={"disk": {"ssd"}}),),
            (machine(A), machine(B, disk="ssd")),
            {"a.service": B},
        ),
        [],
        {},
        id="metadata-still-satisfied-stays",
    ),
    pytest.param(
        Snapshot(
            (unit("a.service", machine_metadata={"disk": {"ssd"}}),),
            (machine(A, disk="ssd"), machine(B, disk="hdd")),
            {"a.service": B},
        ),
        [move("a.service", B, A, f"machine 2b3c4d5e: metadata disk=ssd not satisfied; {ONLY}")],
        {},
        id="metadata-changed-moves",
    ),
    pytest.param(
        Snapshot((unit("a.service", machine_metadata={"disk": {"ssd"}}),), (machine(A, disk="hdd"),), {"a.service": A}),
        [unplace("a.service", A, "machine 1a2b3c4d: metadata disk=ssd not satisfied; no eligible machine")],
        {"a.service": ("machine 1a2b3c4d: metadata disk=ssd not satisfied",)},
        id="metadata-changed-nowhere-unplaced",
    ),
    pytest.param(
        Snapshot((unit("a.service"), unit("b.service")), (machine(A), machine(B)), {"a.service": C, "b.service": A}),
        [move("a.service", C, B, f"machine 3c4d5e6f is gone; {LEAST_2}")],
        {},
        id="machine-gone-moves",
    ),
    pytest.param(
        Snapshot((unit("a.service"),), (), {"a.service": C}),
        [unplace("a.service", C, "machine 3c4d5e6f is gone; no eligible machine")],
        {"a.service": ("no machines in the cluster",)},
        id="machine-gone-nowhere",
    ),
    pytest.param(
        Snapshot(
            (unit("db.service"), unit("a-side.service", machine_of=("db.service",))),
            (machine(A), machine(B)),
            {"db.service": B},
        ),
        [place("a-side.service", B, ONLY)],
        {},
        id="machine-of-follows-peer",
    ),
    pytest.param(
        Snapshot((unit("db.service"), unit("a-side.service", machine_of=("db.service",))), (machine(A), machine(B))),
        [place("db.service", A, LEAST_2), place("a-side.service", A, ONLY)],
        {},
        id="machine-of-peer-placed-first-in-same-run",
    ),
    pytest.param(
        Snapshot(
            (unit("db.service", "inactive"), unit("side.service", machine_of=("db.service",))), (machine(A), machine(B))
        ),
        [],
        {
            "side.service": (
                "machine 1a2b3c4d: MachineOf peer db.service is not scheduled here",
                "machine 2b3c4d5e: MachineOf peer db.service is not scheduled here",
            )
        },
        id="machine-of-waits-for-peer",
    ),
    pytest.param(
        Snapshot(
            (unit("db.service"), unit("web.service"), unit("side.service", machine_of=("db.service", "web.service"))),
            (machine(A), machine(B)),
            {"db.service": A, "web.service": B},
        ),
        [],
        {
            "side.service": (
                "machine 1a2b3c4d: MachineOf peer web.service is not scheduled here",
                "machine 2b3c4d5e: MachineOf peer db.service is not scheduled here",
            )
        },
        id="machine-of-needs-all-peers",
    ),
    pytest.param(
        Snapshot(
            (unit("db.service"), unit("side.service", machine_of=("db.service",))),
            (machine(A), machine(B)),
            {"db.service": C, "side.service": C},
        ),
        [
            move("db.service", C, A, f"machine 3c4d5e6f is gone; {LEAST_2}"),
            move("side.service", C, A, f"machine 3c4d5e6f is gone; {ONLY}"),
        ],
        {},
        id="machine-of-moves-with-peer",
    ),
    pytest.param(
        Snapshot(
            (
                unit("a.service", machine_of=("b.service",)),
                unit("b.service", machine_of=("a.service",)),
                unit("c.service", machine_of=("a.service",)),
            ),
            (machine(A),),
            {"a.service": A},
        ),
        [unplace("a.service", A, "MachineOf cycle: a.service -> b.service -> a.service")],
        {
            "a.service": ("MachineOf cycle: a.service -> b.service -> a.service",),
            "b.service": ("MachineOf cycle: b.service -> a.service -> b.service",),
            "c.service": ("machine 1a2b3c4d: MachineOf peer a.service is not scheduled here",),
        },
        id="machine-of-cycle",
    ),
    pytest.param(
        Snapshot(
            (
                unit("db.service"),
                unit("db-v2.service", replaces=("db.service",), machine_metadata={"disk": {"ssd"}}),
                unit("x.service"),
            ),
            (machine(A, disk="ssd"), machine(B), machine(C)),
            {"db.service": A, "x.service": B},
        ),
        [
            place("db-v2.service", A, f"{ONLY}; replaces db.service"),
            move("db.service", A, C, f"replaced by db-v2.service; {LEAST_2}"),
        ],
        {},
        id="replaces-evicts-to-least-loaded-other",
    ),
    pytest.param(
        Snapshot(
            (unit("db.service"), unit("db-v2.service", replaces=("db.service",), machine_metadata={"disk": {"ssd"}})),
            (machine(A, disk="ssd"),),
            {"db.service": A},
        ),
        [
            place("db-v2.service", A, f"{ONLY}; replaces db.service"),
            unplace("db.service", A, "replaced by db-v2.service; no eligible machine"),
        ],
        {"db.service": ("machine 1a2b3c4d: replaced by db-v2.service",)},
        id="replaces-evicts-nowhere",
    ),
    pytest.param(
        Snapshot(
            (
                unit("db.service"),
                unit("db-v2.service", replaces=("db.service",)),
                unit("side.service", machine_of=("db.service",)),
            ),
            (machine(A), machine(B)),
            {"db.service": A, "side.service": A},
        ),
        [
            place("db-v2.service", B, f"{LEAST_2}"),
        ],
        {},
        id="replaces-is-a-permission-not-a-preference",
    ),
    pytest.param(
        Snapshot(
            (
                unit("db.service"),
                unit("db-v2.service", replaces=("db.service",)),
                unit("side.service", machine_of=("db.service",)),
            ),
            (machine(A), machine(B)),
            {"db.service": A, "side.service": A, "db-v2.service": A},
        ),
        [
            move("db.service", A, B, f"replaced by db-v2.service; {ONLY}"),
            move("side.service", A, B, f"machine 1a2b3c4d: MachineOf peer db.service is not scheduled here; {ONLY}"),
        ],
        {},
        id="replaces-recorded-together-evicts-with-followers",
    ),
    pytest.param(
        Snapshot(
            (
                unit("db@1.service"),
                unit("db@2.service", machine_of=("db@1.service",)),
                unit("new.service", replaces=("db@*",)),
            ),
            (machine(A), machine(B)),
            {"db@1.service": A, "db@2.service": A, "new.service": A},
        ),
        [
            move("db@1.service", A, B, f"replaced by new.service; {ONLY}"),
            move("db@2.service", A, B, f"replaced by new.service; {ONLY}"),
        ],
        {},
        id="replaces-a-peer-and-its-follower",
    ),
    pytest.param(
        Snapshot(
            (
                unit("a.service", replaces=("b.service",)),
                unit("b.service", replaces=("c.service",)),
                unit("c.service", replaces=("a.service",)),
            ),
            (machine(A),),
        ),
        [place("a.service", A, f"{ONLY}; replaces b.service")],
        {
            "b.service": ("machine 1a2b3c4d: replaced by a.service",),
            "c.service": (
                "machine 1a2b3c4d: would replace a.service, replaced too often in this run (a cycle of Replaces?)",
            ),
        },
        id="replaces-cycle-ends",
    ),
    pytest.param(
        Snapshot((unit("g.service", is_global=True),), (machine(A), machine(B))),
        [],
        {},
        id="global-never-placed",
    ),
    pytest.param(
        Snapshot((unit("g.service", is_global=True),), (machine(A),), {"g.service": A}),
        [unplace("g.service", A, "global units run on every matching machine, not from the schedule")],
        {},
        id="global-in-schedule-unplaced",
    ),
]


@pytest.mark.parametrize(("snapshot", "decisions", "unplaceable"), CASES)
def test_schedule(snapshot: Snapshot, decisions: list[Decision], unplaceable: dict[str, tuple[str, ...]]) -> None:
    plan = schedule(snapshot)
    assert list(plan.decisions) == decisions
    assert dict(plan.unplaceable) == unplaceable


@pytest.mark.parametrize(("snapshot", "decisions", "unplaceable"), CASES)
def test_same_plan_whatever_the_input_order(snapshot: Snapshot, decisions: object, unplaceable: object) -> None:
    expected = schedule(snapshot)
    rng = random.Random(4)
    for _ in range(5):
        units, machines, recorded = list(snapshot.units), list(snapshot.machines), list(snapshot.schedule.items())
        rng.shuffle(units)
        rng.shuffle(machines)
        rng.shuffle(recorded)
        assert schedule(Snapshot(tuple(units), tuple(machines), dict(recorded))) == expected


@pytest.mark.parametrize(("snapshot", "decisions", "unplaceable"), CASES)
def test_applying_the_plan_settles(snapshot: Snapshot, decisions: object, unplaceable: object) -> None:
    settled = Snapshot(snapshot.units, snapshot.machines, schedule(snapshot).apply(snapshot.schedule))
    assert schedule(settled).decisions == ()


def test_machine_death_reschedules_everything_it_ran() -> None:
    """What the leader will do when gossip declares a machine dead: one run moves all of its units."""
    machines = tuple(machine(f"{i:08x}" + "0" * 24) for i in range(4))
    instances = [unit(f"svc@{i}.service", conflicts=("svc@*",)) for i in range(3)]
    units = (*instances, unit("side.service", machine_of=("svc@0.service",)))
    recorded = {"svc@0.service": machines[0].id, "side.service": machines[0].id, "svc@1.service": machines[1].id}
    survivors = machines[1:]
    plan = schedule(Snapshot(units, survivors, recorded))
    result = plan.apply(recorded)
    assert result["side.service"] == result["svc@0.service"] != machines[0].id
    assert len({result[f"svc@{i}.service"] for i in range(3)}) == 3
    assert {d.reason.split(";")[0] for d in plan.decisions if d.kind == "move"} == {"machine 00000000 is gone"}


def test_template_instances_spread_one_per_machine() -> None:
    units = tuple(hello(f"hello_world@{i}.service") for i in range(1, 6))
    machines = tuple(machine(f"{i:08x}" + "0" * 24, **WEB) for i in range(3))
    plan = schedule(Snapshot(units, machines))
    placed = {d.unit: d.machine or "" for d in plan.decisions}
    assert sorted(placed.values()) == sorted(m.id for m in machines)
    assert sorted(plan.unplaceable) == ["hello_world@4.service", "hello_world@5.service"]


@pytest.mark.parametrize(
    ("global_unit", "there", "runs", "reason"),
    [
        (unit("g.service", is_global=True), (), True, ""),
        (
            unit("g.service", is_global=True, machine_metadata={"group": {"hw_webservers"}}),
            (),
            False,
            "machine 1a2b3c4d: metadata group=hw_webservers not satisfied",
        ),
        (
            unit("g.service", is_global=True, conflicts=("a.*",)),
            (unit("a.service"),),
            False,
            "machine 1a2b3c4d: conflicts with a.service",
        ),
        (
            unit("g.service", is_global=True),
            (unit("a.service", conflicts=("g.*",)),),
            False,
            "machine 1a2b3c4d: conflicts with a.service",
        ),
        (unit("g.service", is_global=True, conflicts=("g.*",)), (unit("g.service", is_global=True),), True, ""),
    ],
)
def test_runs_global(global_unit: UnitSpec, there: tuple[UnitSpec, ...], runs: bool, reason: str) -> None:
    verdict = runs_global(global_unit, machine(A, group="db"), there)
    assert (bool(verdict), verdict.reason) == (runs, reason)


# --- properties over random snapshots --------------------------------------------------------------------------

MACHINE_IDS = [f"{i:02x}" * 16 for i in range(1, 6)]
NAMES = [f"{p}@{i}.service" for p in ("web", "db") for i in range(4)] + ["side.service", "app.service"]


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    machines = tuple(
        MachineSpec(mid, {"zone": draw(st.sampled_from(["a", "b"]))})
        for mid in draw(st.lists(st.sampled_from(MACHINE_IDS), unique=True, max_size=4))
    )
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    units = []
    for name in names:
        kind = draw(
            st.sampled_from(["plain", "conflicts", "metadata", "machine_id", "machine_of", "replaces", "global"])
        )
        reqs = Requirements()
        if kind == "conflicts":
            reqs = Requirements(conflicts=(name.partition("@")[0] + "@*",))
        elif kind == "metadata":
            reqs = Requirements(machine_metadata={"zone": frozenset({draw(st.sampled_from(["a", "b"]))})})
        elif kind == "machine_id":
            reqs = Requirements(machine_id=draw(st.sampled_from(MACHINE_IDS))[: draw(st.sampled_from([8, 32]))])
        elif kind == "machine_of":
            reqs = Requirements(machine_of=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True))))
        elif kind == "replaces":
            reqs = Requirements(replaces=(draw(st.sampled_from(["db@*", "web@1.service", "app.service"])),))
        elif kind == "global":
            reqs = Requirements(is_global=True)
        units.append(UnitSpec(name, reqs, draw(st.sampled_from(["inactive", "loaded", "launched"]))))
    recorded = draw(
        st.dictionaries(st.sampled_from(names or ["x.service"]), st.sampled_from([*MACHINE_IDS, "f" * 32]), max_size=6)
    )
    return Snapshot(tuple(units), machines, recorded)


def _check_valid(snapshot: Snapshot, result: dict[str, str]) -> None:
    units = {u.name: u for u in snapshot.units}
    machines = {m.id: m for m in snapshot.machines}
    for name, machine_id in result.items():
        reqs = units[name].requirements
        assert units[name].wants_machine
        assert not reqs.is_global
        assert reqs.machine_id_matches(machine_id)
        assert reqs.metadata_matches(machines[machine_id].metadata)
        here = {n for n, m in result.items() if m == machine_id}
        assert set(reqs.machine_of) <= here
        for other in here - {name}:
            assert not reqs.conflicts_with(other)
            assert not units[other].requirements.conflicts_with(name)


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_plan_is_valid_and_idempotent(snapshot: Snapshot) -> None:
    plan = schedule(snapshot)
    result = plan.apply(snapshot.schedule)
    _check_valid(snapshot, result)
    again = schedule(Snapshot(snapshot.units, snapshot.machines, result))
    assert again.decisions == ()
    assert again.unplaceable == plan.unplaceable
