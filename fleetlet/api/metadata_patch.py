"""``PATCH /machines``: fleet's operations on machine metadata, decoded and checked whole before any is applied.

The body is a JSON array of operations in fleet's shape, a cousin of JSON Patch::

    [{"op": "add", "path": "/<machineID>/metadata/<key>", "value": {"value": "x"}},
     {"op": "remove", "path": "/<machineID>/metadata/<key>"}]

``add`` and ``replace`` both set the key (fleet made no difference between them), ``remove`` drops it whether or not
it was there. Decoding and planning are pure: the handler applies the plan only once every operation has passed,
so a list with one bad operation changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from fleetlet.api.errors import APIError
from fleetlet.api.wire import json_type

OpKind = Literal["add", "remove", "replace"]
OP_KINDS: tuple[OpKind, ...] = ("add", "remove", "replace")
MACHINE_NOT_FOUND = "machine not found"
# Metadata is shown and given as key=value,key=value (list-machines, the agent's --metadata): these would be ambiguous.
_KEY_FORBIDDEN = frozenset("=,/")
_VALUE_FORBIDDEN = frozenset(",")


@dataclass(frozen=True, slots=True)
class MetadataOp:
    """One operation: set (``add``, ``replace``) or drop (``remove``) ``key`` of a machine's metadata."""

    op: OpKind
    machine_id: str
    key: str
    value: str = ""  # empty for remove


def parse_operations(data: bytes) -> tuple[MetadataOp, ...]:
    """Decode a ``PATCH /machines`` body; APIError 400 naming the first bad operation by its index."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise APIError(400, f"unable to decode body: {e}") from e
    if not isinstance(doc, list):
        raise APIError(400, f"unable to decode body: expected a JSON array of operations, not {json_type(doc)}")
    return tuple(_operation(item, f"operations[{i}]") for i, item in enumerate(doc))


def plan(current: Mapping[str, Mapping[str, str]], operations: Sequence[MetadataOp]) -> dict[str, dict[str, str]]:
    """The new metadata of each machine whose metadata the operations change, applied in order.

    ``current`` maps each known machine to its metadata; an operation on any other machine is a 404.
    """
    for operation in operations:
        if operation.machine_id not in current:
            raise APIError(404, MACHINE_NOT_FOUND)
    updated: dict[str, dict[str, str]] = {}
    for operation in operations:
        metadata = updated.setdefault(operation.machine_id, dict(current[operation.machine_id]))
        if operation.op == "remove":
            metadata.pop(operation.key, None)
        else:
            metadata[operation.key] = operation.value
    return {machine: metadata for machine, metadata in updated.items() if metadata != dict(current[machine])}


def _operation(item: object, where: str) -> MetadataOp:
    if not isinstance(item, dict):
        raise APIError(400, f"{where}: expected an object, not {json_type(item)}")
    op = item.get("op")
    kind = next((k for k in OP_KINDS if k == op), None)
    if kind is None:
        raise APIError(400, f"{where}: op {_shown(op)} is not one of {', '.join(OP_KINDS)}")
    machine_id, key = _path(item.get("path"), where)
    if kind == "remove":
        return MetadataOp(kind, machine_id, key)
    return MetadataOp(kind, machine_id, key, _value(item.get("value"), kind, where))


def _path(path: object, where: str) -> tuple[str, str]:
    if not isinstance(path, str):
        raise APIError(400, f"{where}: path must be a string /MACHINE_ID/metadata/KEY, not {_shown(path)}")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] or parts[2] != "metadata" or not parts[1] or not parts[3]:
        raise APIError(400, f"{where}: path {_shown(path)} is not /MACHINE_ID/metadata/KEY")
    key = parts[3]
    if not key.isprintable() or " " in key or not _KEY_FORBIDDEN.isdisjoint(key):
        raise APIError(
            400, f"{where}: invalid metadata key {_shown(key)}: no spaces, control characters, '=', ',' or '/'"
        )
    return parts[1], key


def _value(value: object, kind: OpKind, where: str) -> str:
    inner: Any = value.get("value") if isinstance(value, dict) else None
    if not isinstance(inner, str) or not inner:
        raise APIError(400, f'{where}: {kind} needs a non-empty value: {{"value": "..."}}, not {_shown(value)}')
    if not inner.isprintable() or not _VALUE_FORBIDDEN.isdisjoint(inner):
        raise APIError(400, f"{where}: invalid metadata value {_shown(inner)}: no control characters or ','")
    return inner


def _shown(value: object) -> str:
    """A value as the client sent it, in JSON; ``null`` for an absent field."""
    if isinstance(value, dict | list):
        return json_type(value)
    return orjson.dumps(value).decode()
