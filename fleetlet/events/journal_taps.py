"""Journal taps: the ``journal`` topic's entries, published into the event hub only while somebody asks for them.

A journal entry becomes an event like any other change, indexed by the hub, so a subscriber that asks for
``journal:hello.service`` gets the unit's entries in order among the other events, and resumes after an index
without a gap or a duplicate. But the hub's ring is shared and every unit's output would flood it, so a unit's
journal is followed only while at least one subscription's globs match the unit: a *tap*, one per unit however
many subscribers want it, started by the first and stopped when the last leaves.

An entry written while nobody tapped the unit is not an event: the journal resource (``/v1/units/NAME/journal``)
is where a unit's history is. Which units a subscription wants is looked at when it starts and again every
:data:`REFRESH_SECONDS`, so a unit loaded (or reloaded, with a new journal) after the subscription started is
tapped within that time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.clock import Clock
from fleetlet.events.hub import EventHub
from fleetlet.events.model import JOURNAL_ENTRY
from fleetlet.service.journal import Journal, JournalEntry
from fleetlet.units.globs import glob_matches

REFRESH_SECONDS: Final = 5.0
# Entries that may queue up between a unit's writes and its tap (a burst of output): past it, the journal's own
# "-- N entries dropped --" entry is published instead, and the writer never waits.
TAP_BUFFER: Final = 1024


class JournalSource(Protocol):
    """Where the journals to tap are: :class:`fleetlet.api.view.NodeView` is one."""

    def journal_units(self) -> Sequence[str]:
        """The units whose journal can be followed here now."""
        ...

    def journal(self, unit: str) -> Journal | None: ...


@dataclass(eq=False)
class _Tap:
    journal: Journal
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class JournalTaps:
    """The taps of one hub. Start :meth:`run` in a task group; subscribers use :meth:`tapping`."""

    def __init__(self, hub: EventHub, journals: JournalSource, machine_id: str, clock: Clock) -> None:
        self._hub = hub
        self._journals = journals
        self._machine_id = machine_id
        self._clock = clock
        self._interests: list[tuple[str, ...]] = []  # one entry per subscription, its unit globs
        self._taps: dict[str, _Tap] = {}
        self._tg: TaskGroup | None = None

    @property
    def tapped(self) -> frozenset[str]:
        """The units whose journal is followed now."""
        return frozenset(self._taps)

    @asynccontextmanager
    async def tapping(self, globs: Sequence[str]) -> AsyncIterator[None]:
        """Publish the entries of the units matching ``globs`` while the block runs.

        On entry, the units that match now are being followed (once :meth:`run` has started): what they write
        from then on is published.
        """
        interest = tuple(globs)
        self._interests.append(interest)
        try:
            await self._sync()
            yield
        finally:
            self._interests.remove(interest)
            self._stop_unwanted(self._wanted())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the taps, and look again at which units are wanted every :data:`REFRESH_SECONDS`."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await self._sync()  # subscriptions that came before the run
                task_status.started()
                while True:
                    await self._clock.sleep(REFRESH_SECONDS)
                    if self._interests or self._taps:
                        await self._sync()
            finally:
                self._tg = None
                self._stop_unwanted({})

    def _wanted(self) -> dict[str, Journal]:
        """The journal of every unit some subscription's globs match."""
        if not self._interests:
            return {}
        globs = {g for interest in self._interests for g in interest}
        wanted: dict[str, Journal] = {}
        for unit in self._journals.journal_units():
            if any(glob_matches(g, unit) for g in globs):
                journal = self._journals.journal(unit)
                if journal is not None:
                    wanted[unit] = journal
        return wanted

    def _stop_unwanted(self, wanted: dict[str, Journal]) -> None:
        for unit, tap in list(self._taps.items()):
            if wanted.get(unit) is not tap.journal:  # not wanted, or the unit has a new journal since
                tap.scope.cancel()
                del self._taps[unit]

    async def _sync(self) -> None:
        wanted = self._wanted()
        self._stop_unwanted(wanted)
        started = False
        for unit, journal in wanted.items():
            tg = self._tg
            if tg is None:
                return  # not running yet: the run starts them
            if unit not in self._taps:
                tap = self._taps[unit] = _Tap(journal)  # before the await: a concurrent sync sees it
                await tg.start(self._follow, unit, tap)
                started = True
        if started:
            # A subscription may have left while this one waited for a start: what only it wanted goes.
            self._stop_unwanted(self._wanted())

    async def _follow(self, unit: str, tap: _Tap, *, task_status: TaskStatus[None]) -> None:
        def publish(entry: JournalEntry) -> None:
            payload = {
                "name": unit,
                "machineID": self._machine_id,
                "stream": entry.stream,
                "message": entry.message,
                "time": entry.time,
            }
            self._hub.publish("journal", JOURNAL_ENTRY, unit, payload, gone=True)

        try:
            with tap.scope:
                # The task goes on into follow() without yielding, and follow() subscribes before its first
                # await: when the caller of start() resumes, every later write reaches the hub.
                task_status.started()
                await tap.journal.follow(publish, last=0, buffer=TAP_BUFFER)
        finally:
            # The journal closed (its unit was unloaded), or the tap was stopped: the next sync may start anew.
            if self._taps.get(unit) is tap:
                del self._taps[unit]
