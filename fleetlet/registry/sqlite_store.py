"""The SQLite side of SqliteRegistry: schema, its version, and the synchronous reads and writes run in a thread.

Kept apart from the async front (:mod:`fleetlet.registry.sqlite`) so that every function here is plain blocking
code on a connection it is given, easy to follow and to run in a worker thread.

Layout (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`; later versions migrate from it): ``meta`` holds the head
revision and the compacted revision; ``units``, ``schedule`` and ``leader`` the current state, each row with its mod
revision; ``changes`` the last writes, for watches to replay.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from pathlib import Path

import orjson

from fleetlet.registry.errors import RegistryError
from fleetlet.registry.model import (
    LEADER_KEY,
    SCHEDULE_PREFIX,
    UNITS_PREFIX,
    Change,
    LeaderRecord,
    ScheduleEntry,
    UnitRecord,
    Value,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE units (
    name TEXT PRIMARY KEY, text TEXT NOT NULL, hash TEXT NOT NULL, desired TEXT NOT NULL, revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE schedule (unit TEXT PRIMARY KEY, machine TEXT NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX schedule_by_machine ON schedule (machine, unit);
CREATE TABLE leader (
    id INTEGER PRIMARY KEY CHECK (id = 1), machine TEXT NOT NULL, revision INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE changes (
    revision INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, value BLOB, PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
INSERT INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fsync on every commit.

    ``synchronous=FULL`` in WAL mode syncs the log at each commit: an acknowledged commit survives kill -9 and
    power loss as far as the disk honours fsync. (NORMAL would survive kill -9 but not a power cut.)
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        if writer:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise RegistryError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")
        if writer:
            _migrate(conn, path)
    except Exception:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # Statement by statement: executescript would commit first, outside this transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise RegistryError(f"{path}: registry schema {version} is newer than this fleetlet's ({SCHEMA_VERSION})")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise


# --- values in the change log ------------------------------------------------------------------------------------


def encode(value: Value | None) -> bytes | None:
    return None if value is None else orjson.dumps(asdict(value))


def decode(key: str, blob: bytes | None) -> Value | None:
    if blob is None:
        return None
    fields = orjson.loads(blob)
    if key.startswith(UNITS_PREFIX):
        return UnitRecord(**fields)
    if key.startswith(SCHEDULE_PREFIX):
        return ScheduleEntry(**fields)
    if key == LEADER_KEY:
        return LeaderRecord(**fields)
    raise RegistryError(f"unknown key in the change log: {key!r}")


# --- reads -------------------------------------------------------------------------------------------------------


def meta(conn: sqlite3.Connection, name: str) -> int:
    value: int = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]
    return value


def unit_row(conn: sqlite3.Connection, name: str) -> UnitRecord | None:
    row = conn.execute("SELECT name, text, hash, desired, revision FROM units WHERE name = ?", (name,)).fetchone()
    return None if row is None else UnitRecord(*row)


def unit_rows(conn: sqlite3.Connection, after: str | None, limit: int) -> list[UnitRecord]:
    rows = conn.execute(
        "SELECT name, text, hash, desired, revision FROM units WHERE name > ? ORDER BY name LIMIT ?",
        ("" if after is None else after, limit),
    ).fetchall()
    return [UnitRecord(*row) for row in rows]


def schedule_row(conn: sqlite3.Connection, unit: str) -> ScheduleEntry | None:
    row = conn.execute("SELECT unit, machine, revision FROM schedule WHERE unit = ?", (unit,)).fetchone()
    return None if row is None else ScheduleEntry(*row)


def schedule_rows(conn: sqlite3.Connection, machine_id: str | None) -> dict[str, ScheduleEntry]:
    if machine_id is None:
        rows = conn.execute("SELECT unit, machine, revision FROM schedule").fetchall()
    else:
        rows = conn.execute("SELECT unit, machine, revision FROM schedule WHERE machine = ?", (machine_id,)).fetchall()
    return {row[0]: ScheduleEntry(*row) for row in rows}


def leader_row(conn: sqlite3.Connection) -> LeaderRecord | None:
    row = conn.execute("SELECT machine, revision, expires_at FROM leader WHERE id = 1").fetchone()
    return None if row is None else LeaderRecord(*row)


def changes_after(conn: sqlite3.Connection, after: int, prefix: str, limit: int) -> list[Change]:
    rows = conn.execute(
        "SELECT revision, key, value FROM changes WHERE revision > ? AND substr(key, 1, ?) = ?"
        " ORDER BY revision, seq LIMIT ?",
        (after, len(prefix), prefix, limit),
    ).fetchall()
    return [
        Change(revision, "delete" if value is None else "put", key, decode(key, value)) for revision, key, value in rows
    ]


# --- writes, inside the batch's transaction ----------------------------------------------------------------------


class Tx:
    """One batch's transaction as an operation sees it: the next revision, and the changes it makes."""

    def __init__(self, conn: sqlite3.Connection, head: int) -> None:
        self.conn = conn
        self.head = head
        self._changes: list[tuple[str, Value | None]] = []

    @property
    def next(self) -> int:
        """The revision the running operation's changes get."""
        return self.head + 1

    def change(self, key: str, value: Value | None) -> None:
        self._changes.append((key, value))

    def discard(self) -> None:
        self._changes.clear()

    def flush(self) -> None:
        """Log the operation's changes under the next revision; an operation that changed nothing takes none."""
        if not self._changes:
            return
        self.head += 1
        self.conn.executemany(
            "INSERT INTO changes (revision, seq, key, value) VALUES (?, ?, ?, ?)",
            [(self.head, seq, key, encode(value)) for seq, (key, value) in enumerate(self._changes)],
        )
        self._changes.clear()


def finish(tx: Tx, start: int, history: int) -> None:
    """Advance the head revision and drop changes older than the last ``history`` writes."""
    if tx.head == start:
        return
    tx.conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (tx.head,))
    compacted = tx.head - history
    if compacted > meta(tx.conn, "compacted"):
        tx.conn.execute("DELETE FROM changes WHERE revision <= ?", (compacted,))
        tx.conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (compacted,))
