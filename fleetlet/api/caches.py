"""What the API derives from the registry and keeps between requests: the schedule, and units' options as JSON.

A client lists units a page at a time (fleet's pages of 100, ``nextPageToken`` to the next), so without these
every page of a 10,000-unit listing would read the whole schedule and parse each of its units' text again. Both are
kept only while provably current: the schedule by the registry's revision, which every write advances, and the
options by the unit's hash, which names its text.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import orjson

from fleetlet.api.wire import options_json
from fleetlet.registry.model import ScheduleView, UnitRecord
from fleetlet.registry.protocol import Registry
from fleetlet.units.syntax import parse

# Distinct unit texts kept: more than the units of a large cluster (instances of one template share their text).
OPTIONS_ENTRIES: Final = 50_000
# A unit's text may be 1 MiB, so the entries alone would not bound the memory.
OPTIONS_BYTES: Final = 64 * 1024 * 1024


class ScheduleCache:
    """The latest schedule read, reused while the registry is still at the revision it was read at.

    Every write to the registry (a unit's, the schedule's) takes the next revision, so a schedule read at revision
    R is the registry's schedule for as long as the registry reports R. A page of units carries the revision it was
    read at: pages read with no write between them share one read of the schedule.
    """

    def __init__(self) -> None:
        self._latest: ScheduleView | None = None

    async def at(self, registry: Registry, revision: int) -> ScheduleView:
        """The schedule at ``revision``, or read afresh (at ``revision`` or later) when the one kept is not."""
        kept = self._latest
        if kept is not None and kept.revision == revision:
            return kept
        fresh = await registry.schedule()
        latest = self._latest  # another request may have read one meanwhile: keep the newer
        if latest is None or fresh.revision >= latest.revision:
            self._latest = fresh
        return fresh


class OptionsCache:
    """Units' options as fleet's JSON, serialized once per unit text, the least recently used dropped first.

    Keyed by the record's hash, the SHA1 of its text, so a replaced unit (new text, new hash) is never served
    its old options. At most ``max_entries`` texts and ``max_bytes`` of JSON are kept.
    """

    def __init__(self, max_entries: int = OPTIONS_ENTRIES, max_bytes: int = OPTIONS_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[orjson.Fragment, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def json_of(self, record: UnitRecord) -> orjson.Fragment:
        """The record's options, serialized, as ``unit_json`` takes them. Never empty, so never left out: a text
        without options does not parse, and the registry holds none."""
        kept = self._entries.get(record.hash)
        if kept is not None:
            self._entries.move_to_end(record.hash)
            return kept[0]
        data = orjson.dumps(options_json(parse(record.text, record.name).options))
        fragment = orjson.Fragment(data)
        if len(data) <= self.max_bytes:
            self._entries[record.hash] = (fragment, len(data))
            self._bytes += len(data)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size
        return fragment
