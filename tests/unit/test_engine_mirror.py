"""The registry mirror's schedule: moves seen in either order, and echoes of the engine's own writes."""

from __future__ import annotations

import pytest

from fleetlet.engine.mirror import RegistryMirror
from fleetlet.registry.model import Change, ScheduleEntry, schedule_key

A, B = "a" * 32, "b" * 32


def put(revision: int, machine: str) -> Change:
    return Change(revision, "put", schedule_key(machine, "u.service"), ScheduleEntry("u.service", machine, revision))


def delete(revision: int, machine: str) -> Change:
    return Change(revision, "delete", schedule_key(machine, "u.service"), None)


@pytest.mark.parametrize("order", ["delete first", "put first"])
def test_a_move_lands_on_the_new_machine_whichever_half_comes_first(order: str) -> None:
    mirror = RegistryMirror()
    assert mirror.apply(put(1, A))
    halves = [delete(2, A), put(2, B)] if order == "delete first" else [put(2, B), delete(2, A)]
    assert [mirror.apply(c) for c in halves] == ([True, True] if order == "delete first" else [True, False])
    assert mirror.schedule["u.service"].machine_id == B


def test_the_echo_of_the_engines_own_writes_is_not_news() -> None:
    mirror = RegistryMirror()
    mirror.record_write("u.service", A, 3)
    assert not mirror.apply(put(3, A))
    mirror.record_write("u.service", B, 4)  # a move
    assert not mirror.apply(delete(4, A))
    assert not mirror.apply(put(4, B))
    mirror.record_write("u.service", None, 5)
    assert not mirror.apply(delete(5, B))
    assert "u.service" not in mirror.schedule


def test_an_older_change_is_ignored() -> None:
    mirror = RegistryMirror()
    assert mirror.apply(put(5, A))
    assert not mirror.apply(put(4, B))
    assert not mirror.apply(delete(4, A))
    assert mirror.schedule["u.service"].machine_id == A
