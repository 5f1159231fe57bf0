"""The registry's records and errors as JSON: what the remote backend and the server's registry routes exchange.

One module for both ends, so that what the server encodes is by construction what the client decodes. Decoding
checks every field's type and raises :class:`RegistryProtocolError` for anything else: an answer from another
program, or a fleetlet of another version, must fail clearly rather than as a ``KeyError`` deep in the agent.

Errors travel as ``{"error": {"code": ..., "message": ..., ...}}`` and come back as the same exception class with
the same fields, so a caller of the remote registry handles a conflict or a compacted watch exactly as it would
with the registry in its own process.
"""

from __future__ import annotations

from typing import Any

from fleetlet.registry.errors import (
    LeadershipLost,
    RegistryClosed,
    RegistryConflict,
    RegistryError,
    RevisionCompacted,
    UnitNotFound,
)
from fleetlet.registry.model import (
    DESIRED_STATES,
    Change,
    DesiredState,
    LeaderRecord,
    ScheduleEntry,
    ScheduleView,
    UnitPage,
    UnitRecord,
    Value,
)

Json = dict[str, Any]

PATH = "/v1/registry"  # the server's registry routes, under its API
NDJSON = "application/x-ndjson"
WATCH_HEARTBEAT_SECONDS = 2.0  # a watch stream's heartbeat while no change comes


class RegistryProtocolError(RegistryError):
    """An answer that is not what the registry protocol says: another program, or another version."""


# --- records -----------------------------------------------------------------------------------------------------


def unit_json(record: UnitRecord) -> Json:
    return {
        "name": record.name,
        "text": record.text,
        "hash": record.hash,
        "desiredState": record.desired_state,
        "revision": record.revision,
    }


def entry_json(entry: ScheduleEntry) -> Json:
    return {"unit": entry.unit, "machineId": entry.machine_id, "revision": entry.revision}


def leader_json(record: LeaderRecord) -> Json:
    return {"machineId": record.machine_id, "revision": record.revision, "expiresAt": record.expires_at}


def change_json(change: Change) -> Json:
    return {"revision": change.revision, "kind": change.kind, "key": change.key, "value": _value_json(change.value)}


def page_json(page: UnitPage) -> Json:
    return {"units": [unit_json(u) for u in page.units], "nextToken": page.next_token, "revision": page.revision}


def schedule_json(view: ScheduleView) -> Json:
    return {"entries": [entry_json(e) for e in view.entries.values()], "revision": view.revision}


def _value_json(value: Value | None) -> Json | None:
    if value is None:
        return None
    if isinstance(value, UnitRecord):
        return {"unit": unit_json(value)}
    if isinstance(value, ScheduleEntry):
        return {"entry": entry_json(value)}
    return {"leader": leader_json(value)}


def decode_unit(data: object) -> UnitRecord:
    fields = json_object(data, "unit")
    state = json_str(fields, "desiredState")
    if state not in DESIRED_STATES:
        raise RegistryProtocolError(f"unit: desiredState {state!r} is not one of {', '.join(DESIRED_STATES)}")
    desired: DesiredState = state  # checked against DESIRED_STATES just above
    return UnitRecord(
        json_str(fields, "name"),
        json_str(fields, "text"),
        json_str(fields, "hash"),
        desired,
        json_int(fields, "revision"),
    )


def decode_entry(data: object) -> ScheduleEntry:
    fields = json_object(data, "schedule entry")
    return ScheduleEntry(json_str(fields, "unit"), json_str(fields, "machineId"), json_int(fields, "revision"))


def decode_leader(data: object) -> LeaderRecord:
    fields = json_object(data, "leader record")
    expires = fields.get("expiresAt")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        raise RegistryProtocolError("leader record: expiresAt must be a number")
    return LeaderRecord(json_str(fields, "machineId"), json_int(fields, "revision"), float(expires))


def decode_change(data: object) -> Change:
    fields = json_object(data, "change")
    kind = json_str(fields, "kind")
    raw = fields.get("value")
    value: Value | None
    if kind == "delete" and raw is None:
        value = None
    elif kind == "put":
        value = _decode_value(raw)
    else:
        raise RegistryProtocolError(f"change: kind {kind!r} with value {raw!r}")
    return Change(json_int(fields, "revision"), "put" if kind == "put" else "delete", json_str(fields, "key"), value)


def decode_page(data: object) -> UnitPage:
    fields = json_object(data, "unit page")
    token = fields.get("nextToken")
    if token is not None and not isinstance(token, str):
        raise RegistryProtocolError("unit page: nextToken must be a string or null")
    units = tuple(decode_unit(u) for u in json_list(fields, "units"))
    return UnitPage(units, token, json_int(fields, "revision"))


def decode_schedule(data: object) -> ScheduleView:
    fields = json_object(data, "schedule")
    entries = [decode_entry(e) for e in json_list(fields, "entries")]
    return ScheduleView({e.unit: e for e in entries}, json_int(fields, "revision"))


def _decode_value(data: object) -> Value:
    fields = json_object(data, "change value")
    if "unit" in fields:
        return decode_unit(fields["unit"])
    if "entry" in fields:
        return decode_entry(fields["entry"])
    if "leader" in fields:
        return decode_leader(fields["leader"])
    raise RegistryProtocolError(f"change value of no known kind: {sorted(fields)}")


# --- errors ------------------------------------------------------------------------------------------------------

# code -> HTTP status the server answers with it.
ERROR_STATUS = {
    "conflict": 409,
    "leadership-lost": 409,
    "not-found": 404,
    "compacted": 410,
    "invalid": 400,
    "closed": 503,
}


def error_json(exc: RegistryError | ValueError) -> Json:
    """The wire form of an error the registry raised (ValueError: a bad argument, as the backends raise it)."""
    error: Json = {"message": str(exc)}
    if isinstance(exc, RegistryConflict):
        error |= {"key": exc.key, "expected": exc.expected, "actual": exc.actual}
        error["code"] = "leadership-lost" if isinstance(exc, LeadershipLost) else "conflict"
    elif isinstance(exc, UnitNotFound):
        error |= {"code": "not-found", "unit": exc.unit}
    elif isinstance(exc, RevisionCompacted):
        error |= {"code": "compacted", "requested": exc.requested, "compacted": exc.compacted}
    elif isinstance(exc, RegistryClosed):
        error["code"] = "closed"
    elif isinstance(exc, ValueError):
        error["code"] = "invalid"
    else:
        error["code"] = "error"
    return {"error": error}


def decode_error(data: object) -> RegistryError | ValueError:
    """The exception an ``{"error": ...}`` answer stands for."""
    error = json_object(json_object(data, "error answer").get("error"), "error")
    code, message = json_str(error, "code"), json_str(error, "message")
    if code in ("conflict", "leadership-lost"):
        kind = LeadershipLost if code == "leadership-lost" else RegistryConflict
        return kind(json_str(error, "key"), json_int(error, "expected"), json_int(error, "actual"), message)
    if code == "not-found":
        return UnitNotFound(json_str(error, "unit"))
    if code == "compacted":
        return RevisionCompacted(json_int(error, "requested"), json_int(error, "compacted"))
    if code == "closed":
        return RegistryClosed(message)
    if code == "invalid":
        return ValueError(message)
    return RegistryError(message)


# --- field checks (also for the arguments the server reads) ----------------------------------------------------------


def json_object(data: object, what: str) -> Json:
    if not isinstance(data, dict):
        raise RegistryProtocolError(f"{what}: expected an object, got {type(data).__name__}")
    return data


def json_str(fields: Json, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise RegistryProtocolError(f"{name} must be a string, got {value!r}")
    return value


def json_int(fields: Json, name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RegistryProtocolError(f"{name} must be an integer, got {value!r}")
    return value


def json_list(fields: Json, name: str) -> list[Any]:
    value = fields.get(name)
    if not isinstance(value, list):
        raise RegistryProtocolError(f"{name} must be a list, got {type(value).__name__}")
    return value
