"""What an event is: ``{"index", "time", "topic", "type", "key", "payload"}``, and the frames around events.

Topics and their types:

- ``unit``: ``submitted``, ``desired-state-changed``, ``replaced`` (new contents), ``destroyed``; key: the unit.
- ``schedule``: ``placed``, ``moved``, ``unplaced`` (with the reason, or the reasons per machine when no machine
  can take it); key: the unit.
- ``state``: ``changed`` -- a unit's load/active/sub/result on one machine, with the previous ones; key:
  ``unit@machine``, so that one unit on several machines is several keys.
- ``machine``: ``joined``, ``metadata-changed``, ``suspect``, ``dead``, ``left``; key: the machine ID.
- ``leader``: ``elected``, ``lost``; key: ``leader``.
- ``journal``: ``entry`` -- one new entry of a unit's journal on this machine (payload ``name``, ``machineID``,
  ``stream``, ``message`` and the entry's own ``time``); key: the unit. Only for a subscriber that names the
  topic (:data:`EXPLICIT_TOPICS`): a stream of every topic would otherwise carry every line every unit prints.
  Never in a snapshot: an entry is a happening, not something that exists.

An event is immutable and its JSON is encoded once, however many subscribers receive it. Events a client gets
first, describing what already exists, are marked ``"snapshot": true`` and carry the index the live events
continue after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import orjson

Topic: TypeAlias = Literal["unit", "schedule", "state", "machine", "leader", "journal"]
# Every topic: what a subscriber that names none gets, and what snapshots are made of.
TOPICS: Final[tuple[Topic, ...]] = ("unit", "schedule", "state", "machine", "leader")
# Topics a subscriber gets only by naming them.
EXPLICIT_TOPICS: Final[tuple[Topic, ...]] = ("journal",)
JOURNAL_ENTRY: Final = "entry"
LEADER_KEY: Final = "leader"


def state_key(unit: str, machine_id: str) -> str:
    return f"{unit}@{machine_id}"


@dataclass(frozen=True, slots=True)
class Event:
    index: int
    time: float  # wall-clock seconds since the epoch
    topic: Topic
    type: str
    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    snapshot: bool = False
    _json: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        doc: dict[str, Any] = {
            "index": self.index,
            "time": self.time,
            "topic": self.topic,
            "type": self.type,
            "key": self.key,
            "payload": self.payload,
        }
        if self.snapshot:
            doc["snapshot"] = True
        object.__setattr__(self, "_json", orjson.dumps(doc))

    @property
    def json(self) -> bytes:
        """The event as one JSON document, encoded once."""
        return self._json

    def as_snapshot(self, index: int) -> Event:
        """This event as part of a snapshot that live events continue after ``index``."""
        return Event(index, self.time, self.topic, self.type, self.key, self.payload, snapshot=True)


def heartbeat_json(index: int, time: float) -> bytes:
    """A frame that keeps an idle connection alive and says where the stream is."""
    return orjson.dumps({"type": "heartbeat", "index": index, "time": time})


def error_json(code: str, message: str, index: int) -> bytes:
    """The last frame before the server closes a stream: ``index-too-old`` or ``too-slow``."""
    return orjson.dumps({"type": "error", "code": code, "message": message, "index": index})
