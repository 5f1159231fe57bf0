"""The records the client returns, and their decoding from the API's JSON.

Decoding is strict about types and lenient about absence: fleet left empty fields out (``omitempty``), so a field
left out reads as empty, and a field of the wrong type is an :class:`UnexpectedResponse`, named after the endpoint.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

from fleetlet.client.errors import UnexpectedResponse
from fleetlet.diagnostics import Report
from fleetlet.registry.model import DESIRED_STATES, DesiredState
from fleetlet.units import xfleet
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import parse_name


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit as the API reports it; ``machine_id`` is None while it is not scheduled."""

    name: str
    options: tuple[UnitOption, ...]
    desired_state: DesiredState
    current_state: DesiredState
    machine_id: str | None

    @property
    def unit_file(self) -> UnitFile:
        return UnitFile.from_options(self.options, source=self.name)

    @property
    def hash(self) -> str:
        """SHA1 of the unit's normalized text, as fleet computes it (fleetctl shows the first 7 digits)."""
        return _hash_of(self.options)

    @property
    def is_global(self) -> bool:
        """Whether ``[X-Fleet] Global=`` has it run on every machine (the other requirements allowing)."""
        for option in self.options:
            if option.name == xfleet.GLOBAL and option.section == xfleet.SECTION:
                # Its values are read by every rule of the section (specifiers, quoted lists, the last one wins).
                return xfleet.requirements(self.unit_file, parse_name(self.name), Report(self.name)).is_global
        return False  # most units: no need to read the section


# Instances of a template share its options, so a listing of many instances hashes them once. A bound, as the
# cache outlives the listing in a program that embeds the client.
_HASHES_KEPT: Final = 1024


@functools.lru_cache(maxsize=_HASHES_KEPT)
def _hash_of(options: tuple[UnitOption, ...]) -> str:
    return UnitFile.from_options(options).hash


@dataclass(frozen=True, slots=True)
class UnitState:
    """A unit's state on the machine that runs it, as the API reports it (fleet's ``schema.UnitState``)."""

    name: str
    hash: str
    machine_id: str
    load_state: str
    active_state: str
    sub_state: str


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine of the cluster: its ID, the IP users reach it at ("" when unknown), its metadata."""

    id: str
    primary_ip: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class UnitReport:
    """Everything known of one unit: the registry's record, its machine's report, why it has no machine.

    A field the API left out reads as empty: "" for text, None for ``machine_id``, ``since`` (wall-clock seconds
    of the last change of ``active_state``), ``container_id``, ``main_pid`` and ``exit_status``.
    """

    name: str
    description: str = ""
    hash: str = ""
    desired_state: DesiredState = "inactive"
    current_state: DesiredState = "inactive"
    machine_id: str | None = None
    primary_ip: str = ""
    load_state: str = ""
    active_state: str = ""
    sub_state: str = ""
    result: str = ""
    since: float | None = None
    restarts: int = 0
    container_id: str | None = None
    main_pid: int | None = None
    exit_status: str | None = None
    reasons: tuple[str, ...] = ()  # why it cannot be placed, one reason per machine


@dataclass(frozen=True, slots=True)
class Event:
    """One change in the cluster, from the event stream (:meth:`Client.events`).

    ``topic`` is ``unit``, ``schedule``, ``state``, ``machine``, ``leader``, or ``journal`` when asked for by name;
    ``type`` says what happened (``submitted``, ``placed``, ``changed``, ``joined``, ``entry``...); ``key`` names what
    changed: a unit, ``unit@machine`` for a state, a machine ID. ``payload`` holds what a consumer needs without a
    second request. A ``snapshot`` event describes what existed when the stream began, all of them at the ``index``
    the changes continue after.
    """

    index: int
    time: float  # wall-clock seconds since the epoch
    topic: str
    type: str
    key: str
    payload: Mapping[str, Any]
    snapshot: bool = False


MetadataOpKind = Literal["add", "remove", "replace"]


@dataclass(frozen=True, slots=True)
class MetadataOp:
    """One operation of ``PATCH /machines``: set (``add``, ``replace``) or drop (``remove``) a metadata key."""

    op: MetadataOpKind
    machine_id: str
    key: str
    value: str = ""  # ignored by remove

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"op": self.op, "path": f"/{self.machine_id}/metadata/{self.key}"}
        if self.op != "remove":
            doc["value"] = {"value": self.value}
        return doc


def metadata_ops(machine_id: str, current: Mapping[str, str], wanted: Mapping[str, str]) -> list[MetadataOp]:
    """The operations that turn a machine's ``current`` metadata into ``wanted``, by key."""
    ops: list[MetadataOp] = []
    for key in sorted(current.keys() | wanted.keys()):
        if key not in wanted:
            ops.append(MetadataOp("remove", machine_id, key))
        elif key not in current:
            ops.append(MetadataOp("add", machine_id, key, wanted[key]))
        elif current[key] != wanted[key]:
            ops.append(MetadataOp("replace", machine_id, key, wanted[key]))
    return ops


# --- decoding ----------------------------------------------------------------------------------------------------


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a page of a listing is decoded.

    A page of units is some ten thousand new objects (each option a dict, then a tuple), most of them kept until
    the listing ends: the collector would walk them, and everything else the program holds, again and again as a
    listing grows, to free nothing (decoded JSON has no cycles): for 10,000 units, as long as the decoding itself.
    The pause spans no await, so no other task runs under it, and ends with the page.
    """
    if not gc.isenabled():  # the program's choice: leave it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def options_json(unit_file: UnitFile) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit_file.options]


def decode_unit(doc: object, endpoint: str) -> Unit:
    """fleet's ``schema.Unit``; a field left out (``omitempty``) reads as empty."""
    unit = as_object(doc, endpoint)
    return Unit(
        name=_str(unit, "name", endpoint),
        options=_options(as_list(unit.get("options", []), endpoint), endpoint),
        desired_state=_state(unit, "desiredState", endpoint),
        current_state=_state(unit, "currentState", endpoint),
        machine_id=_str(unit, "machineID", endpoint) or None,
    )


def decode_unit_state(doc: object, endpoint: str) -> UnitState:
    state = as_object(doc, endpoint)
    return UnitState(
        name=_str(state, "name", endpoint),
        hash=_str(state, "hash", endpoint),
        machine_id=_str(state, "machineID", endpoint),
        load_state=_str(state, "systemdLoadState", endpoint),
        active_state=_str(state, "systemdActiveState", endpoint),
        sub_state=_str(state, "systemdSubState", endpoint),
    )


def decode_machine(doc: object, endpoint: str) -> Machine:
    machine = as_object(doc, endpoint)
    metadata = as_object(machine.get("metadata", {}), endpoint)
    return Machine(
        id=_str(machine, "id", endpoint),
        primary_ip=_str(machine, "primaryIP", endpoint),
        metadata={key: _str(metadata, key, endpoint) for key in metadata},
    )


def decode_report(doc: object, endpoint: str) -> UnitReport:
    report = as_object(doc, endpoint)
    since = report.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise UnexpectedResponse(endpoint, 200, "since is not a number")
    return UnitReport(
        name=_str(report, "name", endpoint),
        description=_str(report, "description", endpoint),
        hash=_str(report, "hash", endpoint),
        desired_state=_state(report, "desiredState", endpoint),
        current_state=_state(report, "currentState", endpoint),
        machine_id=_str(report, "machineID", endpoint) or None,
        primary_ip=_str(report, "primaryIP", endpoint),
        load_state=_str(report, "loadState", endpoint),
        active_state=_str(report, "activeState", endpoint),
        sub_state=_str(report, "subState", endpoint),
        result=_str(report, "result", endpoint),
        since=float(since) if since is not None else None,
        restarts=as_int(report, "restarts", endpoint) or 0,
        container_id=_str(report, "containerID", endpoint) or None,
        main_pid=as_int(report, "mainPID", endpoint),
        exit_status=_str(report, "exitStatus", endpoint) or None,
        reasons=tuple(_text(r, "reasons", endpoint) for r in as_list(report.get("reasons", []), endpoint)),
    )


def decode_event(doc: dict[str, Any], endpoint: str) -> Event:
    index, time, snapshot = doc.get("index"), doc.get("time"), doc.get("snapshot", False)
    if isinstance(index, bool) or not isinstance(index, int):
        raise UnexpectedResponse(endpoint, 101, "an event's index is not an integer")
    if isinstance(time, bool) or not isinstance(time, int | float):
        raise UnexpectedResponse(endpoint, 101, "an event's time is not a number")
    if not isinstance(snapshot, bool):
        raise UnexpectedResponse(endpoint, 101, "an event's snapshot is not a boolean")
    return Event(
        index=index,
        time=float(time),
        topic=_str(doc, "topic", endpoint),
        type=_str(doc, "type", endpoint),
        key=_str(doc, "key", endpoint),
        payload=as_object(doc.get("payload", {}), endpoint),
        snapshot=snapshot,
    )


def _options(docs: list[Any], endpoint: str) -> tuple[UnitOption, ...]:
    """A unit's options. Every unit of a listing has a dozen or so: the usual option (an object of strings, or
    fields left out) is read inline, and anything else goes through the checks that name what is wrong."""
    options = []
    for doc in docs:
        if isinstance(doc, dict):
            section, name, value = doc.get("section", ""), doc.get("name", ""), doc.get("value", "")
            if isinstance(section, str) and isinstance(name, str) and isinstance(value, str):
                options.append(UnitOption(section, name, value))
                continue
        options.append(_option(as_object(doc, endpoint), endpoint))
    return tuple(options)


def _option(doc: dict[str, Any], endpoint: str) -> UnitOption:
    return UnitOption(_str(doc, "section", endpoint), _str(doc, "name", endpoint), _str(doc, "value", endpoint))


def as_object(doc: object, endpoint: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise UnexpectedResponse(endpoint, 200, "expected a JSON object")
    return doc


def as_list(doc: object, endpoint: str) -> list[Any]:
    if not isinstance(doc, list):
        raise UnexpectedResponse(endpoint, 200, "expected a JSON array")
    return doc


def _str(doc: dict[str, Any], key: str, endpoint: str) -> str:
    return _text(doc.get(key, ""), key, endpoint)


def _text(value: object, key: str, endpoint: str) -> str:
    if not isinstance(value, str):
        raise UnexpectedResponse(endpoint, 200, f"{key} is not a string")
    return value


def as_int(doc: dict[str, Any], key: str, endpoint: str) -> int | None:
    value = doc.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UnexpectedResponse(endpoint, 200, f"{key} is not an integer")
    return value


def _state(doc: dict[str, Any], key: str, endpoint: str) -> DesiredState:
    value = doc.get(key, "inactive")  # fleet omitted empty fields; an empty state is no state
    for state in DESIRED_STATES:
        if value == state:
            return state
    raise UnexpectedResponse(endpoint, 200, f"{key} {value!r} is not one of {', '.join(DESIRED_STATES)}")
