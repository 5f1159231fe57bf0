"""fleet v1's JSON shapes and fleetlet's records, both ways: pure functions, testable without HTTP.

fleet's server marshalled its schema structs with ``omitempty`` on every field, so an empty string or list is
left out (``machineID`` of an unscheduled unit, ``nextPageToken`` on the last page, even an option's empty
``value``); a client reads a missing field as empty. Bodies are decoded the way Go's ``encoding/json`` decoded
them into those structs: unknown fields ignored, missing ones empty, a field of the wrong type an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fleetlet.api.errors import APIError
from fleetlet.api.view import UnitState
from fleetlet.registry.model import DesiredState, ScheduleEntry, UnitRecord
from fleetlet.units.model import UnitOption
from fleetlet.units.syntax import parse

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UnitBody:
    """What a ``PUT /units/NAME`` body asks for; empty strings and tuples where the body left a field out."""

    name: str
    options: tuple[UnitOption, ...]
    desired_state: str


# systemd active states of a unit that has been started and not yet stopped: fleet's "launched".
STARTED_STATES = frozenset({"activating", "active", "reloading"})

StateIndex = Mapping[tuple[str, str], str]


def state_index(states: Iterable[UnitState]) -> dict[tuple[str, str], str]:
    """(unit, machine) -> systemd active state, built once per request so that a page of units is O(units)."""
    return {(s.name, s.machine_id): s.active for s in states}


def current_state(entry: ScheduleEntry | None, active: str | None) -> DesiredState:
    """fleet's current state of a unit: where it is, from the schedule, and what its machine reports of it.

    ``active`` is the systemd active state the scheduled machine reports, None when it reports nothing.
    Unscheduled, or not reported by its machine (yet, or any more): ``inactive``. Started and not stopped
    (activating, active, reloading): ``launched``. Otherwise it is on the machine but not running (inactive,
    deactivating, failed): ``loaded``.
    """
    if entry is None or active is None:
        return "inactive"
    return "launched" if active in STARTED_STATES else "loaded"


def reported_active(index: StateIndex, unit: str, entry: ScheduleEntry | None) -> str | None:
    """The active state the machine ``unit`` is scheduled on reports for it; None when unscheduled or silent."""
    return index.get((unit, entry.machine_id)) if entry is not None else None


def options_json(options: Iterable[UnitOption]) -> list[JSON]:
    return [omit_empty({"section": o.section, "name": o.name, "value": o.value}) for o in options]


def unit_json(
    record: UnitRecord,
    entry: ScheduleEntry | None,
    index: StateIndex,
    options: list[JSON] | orjson.Fragment | None = None,
) -> JSON:
    """A unit as fleet's ``schema.Unit``: name, options in normalized order, desired and current state, machine.

    ``options`` is the record's options as JSON when the caller has them already (the API keeps them serialized:
    :class:`~fleetlet.api.caches.OptionsCache`); otherwise they are parsed from its text.
    """
    return omit_empty(
        {
            "currentState": current_state(entry, reported_active(index, record.name, entry)),
            "desiredState": record.desired_state,
            "machineID": entry.machine_id if entry is not None else "",
            "name": record.name,
            "options": options if options is not None else options_json(parse(record.text, record.name).options),
        }
    )


def unit_page_json(units: Iterable[JSON], next_token: str | None) -> JSON:
    return omit_empty({"units": list(units), "nextPageToken": next_token or ""})


def error_json(status: int, message: str) -> bytes:
    """fleet's error body: code and message are always present, even an empty message."""
    return orjson.dumps({"error": {"code": status, "message": message}})


def parse_unit_body(data: bytes) -> UnitBody:
    """Decode a ``PUT /units/NAME`` body; APIError 400 ``unable to decode body: ...`` when it is not one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise _undecodable(str(e)) from e
    if not isinstance(doc, dict):
        raise _undecodable(f"expected a JSON object, not {json_type(doc)}")
    options = doc.get("options")
    if options is None:
        options = []
    elif not isinstance(options, list):
        raise _undecodable(f"options: expected an array, not {json_type(options)}")
    return UnitBody(
        name=_string(doc, "name", "name"),
        options=tuple(_option(o, i) for i, o in enumerate(options)),
        desired_state=_string(doc, "desiredState", "desiredState"),
    )


def _option(doc: object, index: int) -> UnitOption:
    where = f"options[{index}]"
    if not isinstance(doc, dict):
        raise _undecodable(f"{where}: expected an object, not {json_type(doc)}")
    return UnitOption(
        _string(doc, "section", f"{where}.section"),
        _string(doc, "name", f"{where}.name"),
        _string(doc, "value", f"{where}.value"),
    )


def _string(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _undecodable(f"{where}: expected a string, not {json_type(value)}")
    return value


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _undecodable(reason: str) -> APIError:
    return APIError(400, f"unable to decode body: {reason}")


def omit_empty(doc: JSON) -> JSON:
    """fleet's ``omitempty``: empty strings, lists, maps and None left out."""
    return {k: v for k, v in doc.items() if v not in ("", [], {}, None)}
