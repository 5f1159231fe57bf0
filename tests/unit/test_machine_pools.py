"""Pools of machines and the placement indexes: least loaded first, blocked machines stepped over, evictions seen."""

from __future__ import annotations

from fleetlet.engine.machine_pools import MachinePools
from fleetlet.engine.placements import Placements
from fleetlet.engine.snapshot import MachineSpec, UnitSpec
from fleetlet.units.xfleet import Requirements

MACHINES = [MachineSpec(f"{i:032x}", {"zone": "a" if i % 2 else "b"}) for i in range(6)]
IDS = [m.id for m in MACHINES]


def web(i: int) -> UnitSpec:
    return UnitSpec(f"web@{i}.service", Requirements(conflicts=("web@*",)))


def plain(name: str) -> UnitSpec:
    return UnitSpec(name)


def setup(units: list[UnitSpec]) -> tuple[Placements, MachinePools]:
    state = Placements(MACHINES, units)
    return state, MachinePools(MACHINES, state)


def test_least_loaded_then_lowest_id() -> None:
    state, pools = setup([])
    state.add(plain("a.service"), IDS[0])
    pool = pools.for_requirements(Requirements())
    assert pool.choose(state.blockers(plain("b.service"))) == (IDS[1], 6)


def test_metadata_pool_and_its_count() -> None:
    state, pools = setup([])
    reqs = Requirements(machine_metadata={"zone": frozenset({"a"})})
    pool = pools.for_requirements(reqs)
    assert pool.ids == {IDS[1], IDS[3], IDS[5]}
    assert pool.choose(state.blockers(UnitSpec("z.service", reqs))) == (IDS[1], 3)


def test_conflicting_instances_spread_and_then_find_no_machine() -> None:
    units = [web(i) for i in range(7)]
    state, pools = setup(units)
    pool = pools.for_requirements(Requirements())
    for i, unit in enumerate(units[:6]):
        choice = pool.choose(state.blockers(unit))
        assert choice == (IDS[i], 6 - i)
        state.add(unit, choice[0])
    assert pool.choose(state.blockers(units[6])) is None


def test_a_name_matched_by_another_units_conflicts_is_blocked_too() -> None:
    loner = UnitSpec("db.service", Requirements(conflicts=("web@*",)))
    state, pools = setup([loner, plain("web@1.service")])
    state.add(loner, IDS[0])
    assert pools.for_requirements(Requirements()).choose(state.blockers(plain("web@1.service"))) == (IDS[1], 5)


def test_a_machine_whose_unit_was_removed_comes_back_first() -> None:
    """Loads: web@0-4 and a filler on machines 0-4, two fillers on 5."""
    units = [web(i) for i in range(6)]
    state, pools = setup(units)
    pool = pools.for_requirements(Requirements())
    for i, unit in enumerate(units[:5]):
        state.add(unit, IDS[i])
        state.add(plain(f"filler{i}.service"), IDS[i])
    state.add(plain("filler5.service"), IDS[5])
    state.add(plain("filler6.service"), IDS[5])
    # Every other machine holds a web@; asked twice, the pool has stepped over them often enough to keep a heap
    # without them for units kept off the same machines, which must still see the removal below.
    assert pool.choose(state.blockers(units[5])) == (IDS[5], 1)
    assert pool.choose(state.blockers(units[5])) == (IDS[5], 1)
    state.remove("web@2.service")
    assert pool.choose(state.blockers(units[5])) == (IDS[2], 2)  # unblocked and now the least loaded
