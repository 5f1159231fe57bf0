"""The registry's side of the event stream: units submitted, changed, replaced and destroyed, and the schedule.

The feed reads everything once (what exists at start goes into the hub's snapshot, as no event: nothing happened),
then follows a watch from the revision it read, one registry write at a time. A write may change several keys at
one revision (a move deletes the old placement and puts the new one, in either order; destroying a unit also drops
its placement), so the feed gathers a write's changes and compares each unit it touched before and after the whole
write: a move is one ``moved`` event, never ``unplaced`` then ``placed``.

When the watch falls behind the registry's history it reads everything again and publishes the differences between
what it knew and what it read, then follows again: consumers see every net change, never a gap. A feed that was
stopped (cancelled, or ended by a failure) and is run again does the same: an agent on etcd follows the registry
only while somebody wants its events (:mod:`fleetlet.events.on_demand`), and the changes made meanwhile are
published as the net changes when it starts again, against what the hub was last told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from fleetlet.engine.mirror import RegistryMirror
from fleetlet.events.hub import EventHub
from fleetlet.events.registry_diff import UnitView, placement_payload, unit_changes, unit_payload
from fleetlet.registry.errors import RevisionCompacted
from fleetlet.registry.model import SCHEDULE_PREFIX, UNITS_PREFIX, Change, ScheduleEntry, UnitRecord
from fleetlet.registry.protocol import Registry

log = logging.getLogger("fleetlet.events")

WATCH_BUFFER: Final = 1024


def _no_reasons(unit: str) -> Sequence[str]:
    return ()


class RegistryFeed:
    """Publishes the registry's unit and schedule changes into ``hub``. Start with ``await tg.start(feed.run)``.

    ``reasons(unit)`` says why no machine can take a unit, when this agent knows (it leads: see
    :class:`~fleetlet.events.local_feeds.PlacementFeed`); an ``unplaced`` event then carries them.
    """

    def __init__(
        self, registry: Registry, hub: EventHub, *, reasons: Callable[[str], Sequence[str]] = _no_reasons
    ) -> None:
        self._registry = registry
        self._hub = hub
        self._reasons = reasons
        # What the hub has been told: the mirror is only ever replaced by a whole successful read, so a read that
        # fails halfway leaves it as it was, and the next run compares against it.
        self._mirror = RegistryMirror()
        self._loaded = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Read what exists, report started, then publish every change until cancelled.

        The first run remembers what it read (no event: nothing happened); a later run of the same feed publishes
        the differences from what the hub was told before it stopped.
        """
        revision = await self._read()
        task_status.started()
        while True:
            await self._follow(revision)
            revision = await self._read()

    async def _read(self) -> int:
        """Read everything into a fresh mirror and tell the hub; return the revision to follow from."""
        mirror = RegistryMirror()
        revision = await mirror.load(self._registry)
        previous, self._mirror = self._mirror, mirror
        if self._loaded:
            self._publish_differences(previous.units, previous.schedule)
        else:
            self._loaded = True
            self._remember()
        return revision

    def _remember(self) -> None:
        for name, record in sorted(self._mirror.units.items()):
            self._hub.remember("unit", "submitted", name, unit_payload(record))
        for name, entry in sorted(self._mirror.schedule.items()):
            self._hub.remember("schedule", "placed", name, placement_payload(entry))

    async def _follow(self, revision: int) -> None:
        """Publish each write after ``revision`` as it comes; return when the watch falls behind."""
        send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, revision, send)
            async with receive:
                writes = WriteReader(receive)
                while write := await writes.next():
                    self._publish_write(write)
            tg.cancel_scope.cancel()

    async def _watch(self, revision: int, sink: MemoryObjectSendStream[Change]) -> None:
        try:
            await self._registry.watch(revision, sink)
        except RevisionCompacted as exc:
            log.info("the event feed's registry watch fell behind (%s); reading everything again", exc)

    def _publish_write(self, changes: Sequence[Change]) -> None:
        names = list(dict.fromkeys(name for change in changes if (name := _unit_of(change.key)) is not None))
        before = {name: self._view(name) for name in names}
        for change in changes:
            # The mirror ignores what it already reflects: changes older than its read, the second half of a move.
            self._mirror.apply(change)
        for name in names:
            self._publish(name, before[name], self._view(name))

    def _publish_differences(self, units: Mapping[str, UnitRecord], schedule: Mapping[str, ScheduleEntry]) -> None:
        names = sorted({*units, *schedule, *self._mirror.units, *self._mirror.schedule})
        for name in names:
            self._publish(name, UnitView(units.get(name), schedule.get(name)), self._view(name))

    def _publish(self, name: str, before: UnitView, after: UnitView) -> None:
        reasons = self._reasons(name) if before.placement is not None and after.placement is None else ()
        for event in unit_changes(name, before, after, reasons):
            event.publish(self._hub)

    def _view(self, name: str) -> UnitView:
        return UnitView(self._mirror.units.get(name), self._mirror.schedule.get(name))


class WriteReader:
    """Reads a watch's changes one registry write at a time.

    A write's changes share its revision and the watch sends them back to back from one read of the log (it never
    splits a write), yielding between sends: once a write's first change is here, the rest are at most one
    scheduling turn away. So a write ends at a change of a later revision, or when nothing more has come after
    letting the watch run once; waiting for the next write instead would hold a lone write back until another.
    """

    def __init__(self, receive: MemoryObjectReceiveStream[Change]) -> None:
        self._receive = receive
        self._ahead: Change | None = None  # the first change of the next write, read while ending this one

    async def next(self) -> list[Change]:
        """The changes of the next write, oldest first; empty when the watch has ended."""
        first, self._ahead = self._ahead, None
        if first is None:
            try:
                first = await self._receive.receive()
            except anyio.EndOfStream:
                return []
        write = [first]
        while True:
            change = self._take()
            if change is None:
                await anyio.lowlevel.checkpoint()
                change = self._take()
            if change is None:
                return write
            if change.revision != first.revision:
                self._ahead = change
                return write
            write.append(change)

    def _take(self) -> Change | None:
        try:
            return self._receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return None


def _unit_of(key: str) -> str | None:
    """The unit a registry key concerns; None for the leader record (the engine's feed tells of leadership)."""
    if key.startswith(UNITS_PREFIX):
        return key.removeprefix(UNITS_PREFIX)
    if key.startswith(SCHEDULE_PREFIX):
        return key.removeprefix(SCHEDULE_PREFIX).partition("/")[2]
    return None
