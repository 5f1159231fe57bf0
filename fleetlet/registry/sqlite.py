"""SqliteRegistry: the embedded default registry, one SQLite file in the agent's state directory.

Durability: WAL with ``synchronous=FULL``, and a write is acknowledged (its revision returned) only after its
transaction committed, so every acknowledged write survives kill -9 of the agent, and power loss as far as the disk
honours fsync. Concurrent writers are group-committed (:mod:`fleetlet.registry.group_commit`): one transaction and
one fsync per batch, which multiplies throughput without acknowledging anything earlier.

SQLite blocks, so it runs in worker threads (``anyio.to_thread``): one writer connection used by one batch at a
time, and one reader connection behind a lock (WAL lets it read while a batch commits). Reads run in a read
transaction, so a page or a schedule and the revision returned with it are one consistent snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock
from fleetlet.registry import sqlite_store as store
from fleetlet.registry.errors import LeadershipLost, RegistryClosed, RegistryError, RevisionCompacted, UnitNotFound
from fleetlet.registry.group_commit import GroupCommitter, Operation
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

T = TypeVar("T")


class SqliteRegistry:
    """A registry in the SQLite file at ``path`` (created if missing); ``async with`` opens and closes it.

    One process should own the file: it is the only writer, and only its own watches hear of its writes.
    The last ``history`` writes are kept for watches to replay.
    """

    def __init__(self, path: str | Path, clock: Clock, *, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least one write")
        self.path = Path(path)
        self._clock = clock
        self._history = history
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = anyio.Lock()
        self._notifier = Notifier()
        self._committer: GroupCommitter[store.Tx] = GroupCommitter(self._commit, self._notifier.notify)

    async def __aenter__(self) -> SqliteRegistry:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open (creating or migrating the schema) the database."""
        try:
            self._writer = await anyio.to_thread.run_sync(lambda: store.connect(self.path, writer=True))
            self._reader = await anyio.to_thread.run_sync(lambda: store.connect(self.path, writer=False))
        except sqlite3.Error as exc:
            await self.aclose()
            raise RegistryError(f"{self.path}: cannot open the registry: {exc}") from exc

    async def aclose(self) -> None:
        """Finish the writes already queued, end the watches, close the connections."""
        self._notifier.close()
        with anyio.CancelScope(shield=True):
            await self._committer.wait_idle()
            async with self._read_lock:
                for conn in (self._writer, self._reader):
                    if conn is not None:
                        await anyio.to_thread.run_sync(conn.close)
                self._writer = self._reader = None

    # --- plumbing ----------------------------------------------------------------------------------------------

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def in_snapshot(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("ROLLBACK")

        async with self._read_lock:
            if self._reader is None or self._notifier.closed:
                raise RegistryClosed("the registry is not open")
            try:
                return await anyio.to_thread.run_sync(in_snapshot, self._reader)
            except sqlite3.Error as exc:
                raise RegistryError(f"{self.path}: read failed: {exc}") from exc

    async def _write(self, work: Callable[[store.Tx], T]) -> T:
        if self._writer is None or self._notifier.closed:
            raise RegistryClosed("the registry is not open")
        return await self._committer.run(work)

    def _commit(self, batch: list[Operation[store.Tx]]) -> None:
        """In the worker thread: the batch in one transaction, each operation in a savepoint of its own."""
        conn = self._writer
        assert conn is not None, "the committer runs only while the registry is open"
        try:
            conn.execute("BEGIN IMMEDIATE")
            start = store.meta(conn, "revision")
            tx = store.Tx(conn, start)
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.work(tx)
                    tx.flush()
                except (RegistryError, ValueError, sqlite3.Error) as exc:
                    conn.execute("ROLLBACK TO op")
                    tx.discard()
                    op.error = _mapped(exc, self.path)
                conn.execute("RELEASE op")
            store.finish(tx, start, self._history)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = RegistryError(f"{self.path}: commit failed, nothing written: {exc}")
            failure.__cause__ = exc
            for op in batch:
                op.result, op.error = None, failure

    async def revision(self) -> int:
        return await self._read(lambda conn: store.meta(conn, "revision"))

    # --- units -------------------------------------------------------------------------------------------------

    async def get_unit(self, name: str) -> UnitRecord | None:
        return await self._read(lambda conn: store.unit_row(conn, name))

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        start_after = token_name(after)

        def page(conn: sqlite3.Connection) -> UnitPage:
            units = store.unit_rows(conn, start_after, limit + 1)
            more = len(units) > limit
            units = units[:limit]
            token = page_token(units[-1].name) if more else None
            return UnitPage(tuple(units), token, store.meta(conn, "revision"))

        return await self._read(page)

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        check_desired_state(desired_state)
        text = unit.serialize()
        digest = text_hash(text)

        def put(tx: store.Tx) -> int:
            old = store.unit_row(tx.conn, name)
            check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
            tx.conn.execute(
                "INSERT OR REPLACE INTO units (name, text, hash, desired, revision) VALUES (?, ?, ?, ?, ?)",
                (name, text, digest, desired_state, tx.next),
            )
            tx.change(unit_key(name), UnitRecord(name, text, digest, desired_state, tx.next))
            return tx.next

        return await self._write(put)

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        check_desired_state(state)

        def update(tx: store.Tx) -> int:
            old = store.unit_row(tx.conn, name)
            check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
            if old is None:
                raise UnitNotFound(name)
            tx.conn.execute("UPDATE units SET desired = ?, revision = ? WHERE name = ?", (state, tx.next, name))
            tx.change(unit_key(name), UnitRecord(name, old.text, old.hash, state, tx.next))
            return tx.next

        return await self._write(update)

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        def delete(tx: store.Tx) -> int:
            old = store.unit_row(tx.conn, name)
            check_conflict(unit_key(name), expect_revision, old.revision if old else 0)
            if old is None:
                raise UnitNotFound(name)
            tx.conn.execute("DELETE FROM units WHERE name = ?", (name,))
            tx.change(unit_key(name), None)
            placed = store.schedule_row(tx.conn, name)
            if placed is not None:
                tx.conn.execute("DELETE FROM schedule WHERE unit = ?", (name,))
                tx.change(schedule_key(placed.machine_id, name), None)
            return tx.next

        return await self._write(delete)

    # --- the schedule ------------------------------------------------------------------------------------------

    async def schedule(self) -> ScheduleView:
        return await self._read(
            lambda conn: ScheduleView(store.schedule_rows(conn, None), store.meta(conn, "revision"))
        )

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        return await self._read(
            lambda conn: ScheduleView(store.schedule_rows(conn, machine_id), store.meta(conn, "revision"))
        )

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        now = self._clock.time()

        def place(tx: store.Tx) -> int:
            check_term(term, store.leader_row(tx.conn), now)
            old = store.schedule_row(tx.conn, unit)
            key = schedule_key(old.machine_id if old else machine_id, unit)
            check_conflict(key, expect_revision, old.revision if old else 0)
            if store.unit_row(tx.conn, unit) is None:
                raise UnitNotFound(unit)
            tx.conn.execute(
                "INSERT OR REPLACE INTO schedule (unit, machine, revision) VALUES (?, ?, ?)",
                (unit, machine_id, tx.next),
            )
            if old is not None and old.machine_id != machine_id:
                tx.change(schedule_key(old.machine_id, unit), None)
            tx.change(schedule_key(machine_id, unit), ScheduleEntry(unit, machine_id, tx.next))
            return tx.next

        return await self._write(place)

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        now = self._clock.time()

        def clear(tx: store.Tx) -> int:
            check_term(term, store.leader_row(tx.conn), now)
            old = store.schedule_row(tx.conn, unit)
            check_conflict(
                schedule_key(old.machine_id if old else "-", unit), expect_revision, old.revision if old else 0
            )
            if old is None:
                return tx.head
            tx.conn.execute("DELETE FROM schedule WHERE unit = ?", (unit,))
            tx.change(schedule_key(old.machine_id, unit), None)
            return tx.next

        return await self._write(clear)

    # --- the leader record -------------------------------------------------------------------------------------

    async def leader(self) -> LeaderRecord | None:
        record = await self._read(store.leader_row)
        return record if record is not None and record.expires_at > self._clock.time() else None

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        now = self._clock.time()

        def run(tx: store.Tx) -> LeaderRecord | None:
            current = store.leader_row(tx.conn)
            live = current is not None and current.expires_at > now
            if current is not None and live and current.machine_id != machine_id:
                return None
            if current is not None and live:
                record = LeaderRecord(machine_id, current.revision, now + ttl)
            else:
                record = LeaderRecord(machine_id, tx.next, now + ttl)
                tx.change(LEADER_KEY, record)
            tx.conn.execute(
                "INSERT OR REPLACE INTO leader (id, machine, revision, expires_at) VALUES (1, ?, ?, ?)",
                (record.machine_id, record.revision, record.expires_at),
            )
            return record

        return await self._write(run)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        now = self._clock.time()

        def run(tx: store.Tx) -> LeaderRecord:
            current = store.leader_row(tx.conn)
            if current is None or current.expires_at <= now or current.revision != record.revision:
                actual = current.revision if current is not None and current.expires_at > now else 0
                raise LeadershipLost(LEADER_KEY, record.revision, actual, f"{record.machine_id} no longer leads")
            tx.conn.execute("UPDATE leader SET expires_at = ? WHERE id = 1", (now + ttl,))
            return LeaderRecord(current.machine_id, current.revision, now + ttl)

        return await self._write(run)

    async def resign(self, record: LeaderRecord) -> None:
        def run(tx: store.Tx) -> None:
            current = store.leader_row(tx.conn)
            if current is not None and current.revision == record.revision:
                tx.conn.execute("DELETE FROM leader WHERE id = 1")
                tx.change(LEADER_KEY, None)

        await self._write(run)

    # --- watching ----------------------------------------------------------------------------------------------

    async def _fetch(self, after: int, prefix: str, limit: int) -> Sequence[Change]:
        def read(conn: sqlite3.Connection) -> list[Change]:
            compacted = store.meta(conn, "compacted")
            if after < compacted:
                raise RevisionCompacted(after, compacted)
            return store.changes_after(conn, after, prefix, limit)

        return await self._read(read)

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        await follow(self._fetch, self._notifier, from_revision, sink, prefix)


def _mapped(exc: Exception, path: Path) -> Exception:
    """SQLite's own errors become RegistryError at this boundary; the registry's and ValueError pass as they are."""
    if isinstance(exc, sqlite3.Error):
        mapped = RegistryError(f"{path}: write failed: {exc}")
        mapped.__cause__ = exc
        return mapped
    return exc
