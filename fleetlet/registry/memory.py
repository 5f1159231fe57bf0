"""MemoryRegistry: the Registry port in a few dicts, for tests at every layer (never mock what you own).

It follows the same contract as the SQLite backend (tests/registry_contract.py runs the same tests on both),
including bounded history and RevisionCompacted, so code tested against it behaves the same in production.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from types import TracebackType

import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock
from fleetlet.registry.errors import LeadershipLost, RegistryClosed, RevisionCompacted, UnitNotFound
from fleetlet.registry.model import (
    LEADER_KEY,
    Change,
    DesiredState,
    LeaderRecord,
    ScheduleEntry,
    ScheduleView,
    UnitPage,
    UnitRecord,
    check_conflict,
    check_desired_state,
    check_term,
    page_token,
    schedule_key,
    text_hash,
    token_name,
    unit_key,
)
from fleetlet.registry.protocol import DEFAULT_HISTORY, DEFAULT_PAGE
from fleetlet.registry.watch import Notifier, follow
from fleetlet.units.model import UnitFile


class MemoryRegistry:
    """A registry that lives as long as the object; the last ``history`` writes are kept for watches to replay."""

    def __init__(self, clock: Clock, *, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least one change")
        self._clock = clock
        self._history = history
        self._revision = 0
        self._compacted = 0  # changes at or before this revision are gone
        self._units: dict[str, UnitRecord] = {}
        self._names: list[str] = []  # sorted, for pagination
        self._schedule: dict[str, ScheduleEntry] = {}
        self._leader: LeaderRecord | None = None
        self._changes: deque[Change] = deque()
        self._notifier = Notifier()

    async def __aenter__(self) -> MemoryRegistry:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._notifier.close()

    async def _enter(self) -> None:
        """Every call is a checkpoint, as a real backend's would be, and fails once closed."""
        await anyio.lowlevel.checkpoint()
        if self._notifier.closed:
            raise RegistryClosed("the registry was closed")

    def _commit(self, *changes: tuple[str, UnitRecord | ScheduleEntry | LeaderRecord | None]) -> int:
        """Record one write's changes under the next revision; the caller has already applied them."""
        revision = self._revision + 1
        for key, value in changes:
            self._changes.append(Change(revision, "put" if value is not None else "delete", key, value))
        self._revision = revision
        # The last ``history`` revisions are kept (every write is one revision, whatever its number of keys).
        self._compacted = max(self._compacted, revision - self._history)
        while self._changes and self._changes[0].revision <= self._compacted:
            self._changes.popleft()
        self._notifier.notify()
        return revision

    async def revision(self) -> int:
        await self._enter()
        return self._revision

    # --- units -------------------------------------------------------------------------------------------------

    async def get_unit(self, name: str) -> UnitRecord | None:
        await self._enter()
        return self._units.get(name)

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        await self._enter()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        start_after = token_name(after)
        start = 0 if start_after is None else bisect.bisect_right(self._names, start_after)
        names = self._names[start : start + limit]
        more = start + limit < len(self._names)
        return UnitPage(
            tuple(self._units[n] for n in names), page_token(names[-1]) if more and names else None, self._revision
        )

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        check_desired_state(desired_state)
        text = unit.serialize()
        await self._enter()
        old = self._units.get(name)
        check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
        record = UnitRecord(name, text, text_hash(text), desired_state, self._revision + 1)
        if old is None:
            bisect.insort(self._names, name)
        self._units[name] = record
        return self._commit((unit_key(name), record))

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        check_desired_state(state)
        await self._enter()
        old = self._units.get(name)
        check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
        if old is None:
            raise UnitNotFound(name)
        record = UnitRecord(name, old.text, old.hash, state, self._revision + 1)
        self._units[name] = record
        return self._commit((unit_key(name), record))

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        await self._enter()
        old = self._units.get(name)
        check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
        if old is None:
            raise UnitNotFound(name)
        del self._units[name]
        del self._names[bisect.bisect_left(self._names, name)]
        changes: list[tuple[str, UnitRecord | ScheduleEntry | LeaderRecord | None]] = [(unit_key(name), None)]
        placed = self._schedule.pop(name, None)
        if placed is not None:
            changes.append((schedule_key(placed.machine_id, name), None))
        return self._commit(*changes)

    # --- the schedule ------------------------------------------------------------------------------------------

    async def schedule(self) -> ScheduleView:
        await self._enter()
        return ScheduleView(dict(self._schedule), self._revision)

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        await self._enter()
        mine = {unit: entry for unit, entry in self._schedule.items() if entry.machine_id == machine_id}
        return ScheduleView(mine, self._revision)

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        await self._enter()
        check_term(term, self._leader, self._clock.time())
        old = self._schedule.get(unit)
        check_conflict(
            schedule_key(old.machine_id if old else machine_id, unit), expect_revision, old.revision if old else 0
        )
        if unit not in self._units:
            raise UnitNotFound(unit)
        entry = ScheduleEntry(unit, machine_id, self._revision + 1)
        self._schedule[unit] = entry
        changes: list[tuple[str, UnitRecord | ScheduleEntry | LeaderRecord | None]] = []
        if old is not None and old.machine_id != machine_id:
            changes.append((schedule_key(old.machine_id, unit), None))
        changes.append((schedule_key(machine_id, unit), entry))
        return self._commit(*changes)

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        await self._enter()
        check_term(term, self._leader, self._clock.time())
        old = self._schedule.get(unit)
        check_conflict(schedule_key(old.machine_id if old else "-", unit), expect_revision, old.revision if old else 0)
        if old is None:
            return self._revision
        del self._schedule[unit]
        return self._commit((schedule_key(old.machine_id, unit), None))

    # --- the leader record -------------------------------------------------------------------------------------

    def _live_leader(self) -> LeaderRecord | None:
        leader = self._leader
        return leader if leader is not None and leader.expires_at > self._clock.time() else None

    async def leader(self) -> LeaderRecord | None:
        await self._enter()
        return self._live_leader()

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        await self._enter()
        current = self._live_leader()
        if current is not None and current.machine_id != machine_id:
            return None
        expires_at = self._clock.time() + ttl
        if current is not None:
            self._leader = LeaderRecord(machine_id, current.revision, expires_at)
            return self._leader
        self._leader = LeaderRecord(machine_id, self._revision + 1, expires_at)
        self._commit((LEADER_KEY, self._leader))
        return self._leader

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        await self._enter()
        current = self._live_leader()
        if current is None or current.revision != record.revision:
            raise LeadershipLost(
                LEADER_KEY, record.revision, current.revision if current else 0, f"{record.machine_id} no longer leads"
            )
        self._leader = LeaderRecord(current.machine_id, current.revision, self._clock.time() + ttl)
        return self._leader

    async def resign(self, record: LeaderRecord) -> None:
        await self._enter()
        if self._leader is not None and self._leader.revision == record.revision:
            self._leader = None
            self._commit((LEADER_KEY, None))

    # --- watching ----------------------------------------------------------------------------------------------

    async def _fetch(self, after: int, prefix: str, limit: int) -> Sequence[Change]:
        await self._enter()
        if after < self._compacted:
            raise RevisionCompacted(after, self._compacted)
        found: list[Change] = []
        # Revisions are dense in the log (one or more changes each), so skip to ``after`` by position, not a scan.
        start = max(0, self._index_after(after))
        for i in range(start, len(self._changes)):
            change = self._changes[i]
            if change.key.startswith(prefix):
                found.append(change)
                if len(found) == limit:
                    break
        return found

    def _index_after(self, after: int) -> int:
        lo, hi = 0, len(self._changes)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._changes[mid].revision <= after:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        await follow(self._fetch, self._notifier, from_revision, sink, prefix)
