"""What changed in the registry, as events: one unit's record and placement before and after.

Pure functions, used both for the changes of one registry write and for the differences between two full reads
(after the watch fell behind), so that both say the same thing. A unit's own event comes before its placement's:
a destroyed unit reads ``destroyed`` then ``unplaced``.

Payloads leave out empty fields. Every unit event but ``destroyed`` carries the unit's options, so that a consumer
(and the snapshot, which keeps a unit's latest event) needs no second request for the unit's contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fleetlet.errors import FleetletError
from fleetlet.events.hub import EventHub
from fleetlet.events.model import Event, Topic
from fleetlet.registry.model import ScheduleEntry, UnitRecord
from fleetlet.units.syntax import parse

REASON_DESTROYED: Final = "unit destroyed"
REASON_INACTIVE: Final = "desired state is inactive"
REASON_NO_MACHINE: Final = "no machine can take it"
# A unit that still wants a machine lost it, and this agent does not know the leader's reason (it does not lead).
REASON_BY_LEADER: Final = "unplaced by the leader"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event not yet published: what it will say, and whether its key then no longer exists."""

    topic: Topic
    type: str
    key: str
    payload: Mapping[str, Any]
    gone: bool = False

    def publish(self, hub: EventHub) -> Event:
        return hub.publish(self.topic, self.type, self.key, self.payload, gone=self.gone)


@dataclass(frozen=True, slots=True)
class UnitView:
    """One unit as the registry holds it: its record and its placement, either possibly absent."""

    record: UnitRecord | None = None
    placement: ScheduleEntry | None = None


def unit_changes(name: str, before: UnitView, after: UnitView, reasons: Sequence[str] = ()) -> list[NewEvent]:
    """The events that take ``name`` from ``before`` to ``after``; ``reasons``: why no machine can take it, if known."""
    return [
        *record_events(name, before.record, after.record),
        *placement_events(name, before.placement, after.placement, after.record, reasons),
    ]


def record_events(name: str, old: UnitRecord | None, new: UnitRecord | None) -> list[NewEvent]:
    if new is None:
        if old is None:
            return []
        return [NewEvent("unit", "destroyed", name, _record_payload(old), gone=True)]
    if old is None:
        return [NewEvent("unit", "submitted", name, unit_payload(new))]
    changed_state = {"previousDesiredState": old.desired_state} if old.desired_state != new.desired_state else {}
    if old.hash != new.hash:
        payload = {**unit_payload(new), "previousHash": old.hash, **changed_state}
        return [NewEvent("unit", "replaced", name, payload)]
    if changed_state:
        return [NewEvent("unit", "desired-state-changed", name, {**unit_payload(new), **changed_state})]
    return []  # the same contents submitted again: nothing happened


def placement_events(
    name: str,
    old: ScheduleEntry | None,
    new: ScheduleEntry | None,
    record: UnitRecord | None,
    reasons: Sequence[str] = (),
) -> list[NewEvent]:
    """``record``: the unit after the change, which says why a placement went away when the schedule does not."""
    if new is not None:
        if old is None:
            return [NewEvent("schedule", "placed", name, placement_payload(new))]
        if old.machine_id != new.machine_id:
            payload = {**placement_payload(new), "previousMachineID": old.machine_id}
            return [NewEvent("schedule", "moved", name, payload)]
        return []
    if old is None:
        return []
    return [NewEvent("schedule", "unplaced", name, unplaced_payload(name, old.machine_id, record, reasons), gone=True)]


def unit_payload(record: UnitRecord) -> dict[str, Any]:
    """A unit with its options: what every unit event but ``destroyed`` says."""
    payload = _record_payload(record)
    options = unit_options(record.text)
    if options:
        payload["options"] = options
    return payload


def placement_payload(entry: ScheduleEntry) -> dict[str, Any]:
    return {"name": entry.unit, "machineID": entry.machine_id}


def unplaced_payload(
    name: str, previous_machine: str | None, record: UnitRecord | None, reasons: Sequence[str] = ()
) -> dict[str, Any]:
    """Why ``name`` has no machine: gone, not wanted, or (with ``reasons``, one per machine) nowhere to go."""
    payload: dict[str, Any] = {"name": name}
    if previous_machine:
        payload["previousMachineID"] = previous_machine
    if record is None:
        payload["reason"] = REASON_DESTROYED
    elif record.desired_state == "inactive":
        payload["reason"] = REASON_INACTIVE
    elif reasons:
        payload["reason"] = REASON_NO_MACHINE
        payload["reasons"] = list(reasons)
    else:
        payload["reason"] = REASON_BY_LEADER
    return payload


def unit_options(text: str) -> list[dict[str, str]]:
    """The options of a registry record's text; none when it cannot be parsed (the record still says what it is)."""
    try:
        unit = parse(text)
    except (FleetletError, ValueError):
        return []
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


def _record_payload(record: UnitRecord) -> dict[str, Any]:
    return {"name": record.name, "hash": record.hash, "desiredState": record.desired_state}
