"""A page of /state is picked without sorting every state: the pages must be exactly those of the full sort."""

from __future__ import annotations

import random

import pytest

from fleetlet.api.state import page_of
from fleetlet.api.view import UnitState

MACHINES = ("m1", "m2", "m3")


def _states(count: int, seed: int) -> list[UnitState]:
    """One state per unit and machine, as a view reports them, in no order; some units on several machines (global
    units); names that sort apart from their numbers."""
    rng = random.Random(seed)
    found = []
    for i in range(count):
        name = f"u@{i}.service"
        for machine in rng.sample(MACHINES, rng.choice((1, 1, 2, 3))):
            found.append(UnitState(name, "h", machine, "loaded", rng.choice(("active", "failed")), "x"))
    rng.shuffle(found)
    return found


def _all_pages(states: list[UnitState], size: int, machine_id: str = "", unit_name: str = "") -> list[list[UnitState]]:
    pages = []
    after = None
    while True:
        page, more = page_of(states, size, after, machine_id=machine_id, unit_name=unit_name)
        pages.append(page)
        if not more:
            return pages
        after = (page[-1].name, page[-1].machine_id)


@pytest.mark.parametrize("size", [1, 3, 7, 100, 1000])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_pages_are_those_of_the_full_sort(size: int, seed: int) -> None:
    states = _states(200, seed)
    expected = sorted(states, key=lambda s: (s.name, s.machine_id))
    pages = _all_pages(states, size)
    assert [s for page in pages for s in page] == expected
    assert all(len(page) == size for page in pages[:-1])
    assert 0 < len(pages[-1]) <= size


@pytest.mark.parametrize(("machine_id", "unit_name"), [("m2", ""), ("", "u@3.service"), ("m1", "u@3.service")])
def test_the_filters_apply_before_the_page_is_cut(machine_id: str, unit_name: str) -> None:
    states = _states(200, 3)
    expected = sorted(
        (s for s in states if machine_id in ("", s.machine_id) and unit_name in ("", s.name)),
        key=lambda s: (s.name, s.machine_id),
    )
    assert expected  # the seed gives the filters something to find
    found = [s for page in _all_pages(states, 4, machine_id, unit_name) for s in page]
    assert found == expected


def test_a_page_after_the_last_state_is_empty_and_the_last() -> None:
    states = _states(20, 4)
    last = max(states, key=lambda s: (s.name, s.machine_id))
    assert page_of(states, 5, (last.name, last.machine_id)) == ([], False)
    assert page_of([], 5, None) == ([], False)


def test_a_page_that_ends_on_the_last_state_says_no_more_follow() -> None:
    states = _states(20, 5)
    page, more = page_of(states, len(states), None)
    assert (len(page), more) == (len(states), False)
    page, more = page_of(states, len(states) - 1, None)
    assert (len(page), more) == (len(states) - 1, True)
