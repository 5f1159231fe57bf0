"""Batches: the events a subscriber takes from the hub at once, encoded once for every subscriber that takes the same.

Hundreds of subscribers of the whole stream, woken by the same publish, all take the same events: from the same
cursor (where the previous publish left them) to the same head, through equal filters. Taken one subscriber at a
time, that is a Python loop per event per subscriber to pick the events out of the ring, another to filter them
and a third to join their JSON into a message: at 500 subscribers and 1,000 events/s, half a million steps of each
a second, which is what held the server at one full core. A batch is therefore made once, by the first subscriber
to take it, and the others at the same place find it by its key (where it starts, where it ends, the filter) and
send its bytes as they are.

Events in the ring never change, so a batch cannot go stale, only stop being wanted: once every subscriber has
moved past its start, none asks for it again. The cache keeps the most recent few, which at the head of the stream
is one per distinct filter; a subscriber far behind, alone at its cursor, makes batches nobody shares, at the cost
of one dictionary entry each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fleetlet.events.filters import EventFilter
from fleetlet.events.model import Event

# Batches kept: one per distinct (position, filter) in use at once. Past it the oldest go, and a subscriber that
# still wanted one makes it again: the cost of a miss is only the work the cache saves.
DEFAULT_SIZE: Final = 64

BatchKey = tuple[int, int, EventFilter]  # (the cursor it starts after, the index it takes through, the filter)


class Batch:
    """The events matching a filter among those after one index up to another, and their message."""

    __slots__ = ("events", "message", "through")

    def __init__(self, events: Sequence[Event], through: int) -> None:
        self.events = events  # the matching ones: maybe none, when the filter let nothing through
        self.through = through  # the last index taken, matching or not: where the cursor moves to
        # The events' JSON, a document a line, without a final newline: a websocket message as it is, NDJSON
        # with a newline after it.
        self.message = b"\n".join([e.json for e in events])


class BatchCache:
    """The latest batches made, by key; the oldest are forgotten first."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self._size = size
        self._batches: dict[BatchKey, Batch] = {}  # in the order made

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, key: BatchKey) -> Batch | None:
        return self._batches.get(key)

    def put(self, key: BatchKey, batch: Batch) -> None:
        batches = self._batches
        batches[key] = batch
        if len(batches) > self._size:
            del batches[next(iter(batches))]
