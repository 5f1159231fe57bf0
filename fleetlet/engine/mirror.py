"""The leader's copy of the registry: units and the schedule, kept current from a watch, ready to snapshot.

A new leader reads everything once and then follows the watch, so a scheduling pass costs no registry reads. Each
unit's ``[X-Fleet]`` requirements are parsed once per text (cached by the unit's hash), so a 10,000-unit registry is
not re-parsed when one desired state changes.

Reads page through units and may see later revisions than the watch starts from, and the engine's own writes are
recorded before the watch echoes them: every key therefore remembers the revision it reflects, and a change no newer
than that is ignored. Changes that are ignored do not count as changes, so the engine's own writes do not cause
another scheduling pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec
from fleetlet.errors import FleetletError
from fleetlet.registry.model import (
    SCHEDULE_PREFIX,
    UNITS_PREFIX,
    Change,
    ScheduleEntry,
    ScheduleView,
    UnitRecord,
)
from fleetlet.registry.protocol import Registry
from fleetlet.units.check import load_unit
from fleetlet.units.xfleet import Requirements


class RegistryMirror:
    """Units and schedule entries as of the changes applied so far."""

    def __init__(self) -> None:
        self.units: dict[str, UnitRecord] = {}
        self.schedule: dict[str, ScheduleEntry] = {}
        self._seen: dict[str, int] = {}  # unit -> revision its schedule entry (or its absence) reflects
        self._floor = 0  # every schedule change at or before this revision is already reflected
        self._parsed: dict[str, tuple[str, Requirements | str]] = {}  # unit -> (hash, requirements or why not)
        self.parses = 0  # how many unit texts were parsed: the cache's effect, visible to tests

    async def load(self, registry: Registry, *, machine_id: str | None = None) -> int:
        """Read every unit and the schedule (only ``machine_id``'s part, if given); return the revision to watch from.

        An agent mirrors only its own part of the schedule: it runs what is placed on it, and reading everybody's
        would make every agent's work grow with the cluster (fleet's agents read every decision).
        """
        units: dict[str, UnitRecord] = {}
        after: str | None = None
        first: int | None = None
        while True:
            page = await registry.list_units(after=after)
            first = page.revision if first is None else first
            units.update((record.name, record) for record in page.units)
            if page.next_token is None:
                break
            after = page.next_token
        self.units = units
        self._parsed = {name: cached for name, cached in self._parsed.items() if name in units}
        self.schedule, self._seen, self._floor = {}, {}, 0
        view = await (registry.schedule() if machine_id is None else registry.machine_schedule(machine_id))
        self.reload_schedule(view)
        return first

    def reload_schedule(self, view: ScheduleView) -> None:
        """Merge a fresh read of the schedule: what a stale decision does before deciding again."""
        for name in [name for name in self.schedule if name not in view.entries]:
            if self._seen.get(name, 0) <= view.revision:
                del self.schedule[name]
        for name, entry in view.entries.items():
            if entry.revision > self._seen.get(name, 0):
                self.schedule[name] = entry
        self._seen = {name: rev for name, rev in self._seen.items() if rev > view.revision}
        self._floor = max(self._floor, view.revision)

    def apply(self, change: Change) -> bool:
        """Apply one watched change; True when it changed what the scheduler would see."""
        if change.key.startswith(UNITS_PREFIX):
            return self._apply_unit(change.key.removeprefix(UNITS_PREFIX), change)
        if change.key.startswith(SCHEDULE_PREFIX):
            machine_id, _, name = change.key.removeprefix(SCHEDULE_PREFIX).partition("/")
            return self._apply_schedule(name, machine_id, change)
        return False  # the leader record: the engine's business, not the scheduler's

    def _apply_unit(self, name: str, change: Change) -> bool:
        old = self.units.get(name)
        if old is not None and old.revision >= change.revision:
            return False
        if isinstance(change.value, UnitRecord):
            self.units[name] = change.value
        elif old is not None:
            del self.units[name]
            self._parsed.pop(name, None)
        else:
            return False
        return True

    def _apply_schedule(self, name: str, machine_id: str, change: Change) -> bool:
        """A move is two changes at one revision, in either order: the second half applies only if it is news."""
        seen = self._seen.get(name, 0)
        if change.revision <= self._floor or change.revision < seen:
            return False
        current = self.schedule.get(name)
        if isinstance(change.value, ScheduleEntry):
            if change.revision == seen and current is not None and current.machine_id == change.value.machine_id:
                return False  # the echo of our own write
            self.schedule[name] = change.value
        elif change.revision == seen:
            return False  # the old half of a move whose new half came first, or the echo of our own clearing
        elif current is not None and current.machine_id == machine_id:
            del self.schedule[name]
        else:
            return False  # not the machine the entry names
        self._seen[name] = change.revision
        return True

    def record_write(self, name: str, machine_id: str | None, revision: int) -> None:
        """Remember the engine's own write at ``revision``, so its echo from the watch is not news."""
        if machine_id is None:
            self.schedule.pop(name, None)
        else:
            self.schedule[name] = ScheduleEntry(name, machine_id, revision)
        self._seen[name] = max(self._seen.get(name, 0), revision)

    def entry_revision(self, name: str) -> int:
        """The mod revision of the unit's schedule entry as last seen (0: not scheduled): what a write expects."""
        entry = self.schedule.get(name)
        return entry.revision if entry is not None else 0

    def snapshot(self, machines: Sequence[MachineSpec]) -> tuple[Snapshot, Mapping[str, tuple[str, ...]]]:
        """What the scheduler sees, and the units left out of it because their text cannot be read, with why.

        A unit left out keeps its schedule entry: the engine does not act on a unit it cannot understand.
        """
        specs: list[UnitSpec] = []
        broken: dict[str, tuple[str, ...]] = {}
        for name, record in self.units.items():
            reqs = self._requirements(record)
            if isinstance(reqs, str):
                broken[name] = (reqs,)
            else:
                specs.append(UnitSpec(name, reqs, record.desired_state))
        placed = {name: entry.machine_id for name, entry in self.schedule.items() if name not in broken}
        return Snapshot(tuple(specs), tuple(machines), placed), broken

    def _requirements(self, record: UnitRecord) -> Requirements | str:
        cached = self._parsed.get(record.name)
        if cached is not None and cached[0] == record.hash:
            return cached[1]
        self.parses += 1
        result: Requirements | str
        try:
            result = load_unit(record.text, record.name).requirements
        except FleetletError as exc:
            result = f"unit file cannot be read: {exc}"
        self._parsed[record.name] = (record.hash, result)
        return result
