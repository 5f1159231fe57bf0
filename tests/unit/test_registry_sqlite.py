"""The registry contract on SqliteRegistry (a file in tmp_path), and what only the SQLite backend has to keep."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.registry import Change, Registry, RegistryError, SqliteRegistry, UnitRecord
from fleetlet.registry.group_commit import Operation
from fleetlet.registry.sqlite_store import SCHEMA_VERSION, Tx
from tests.registry_contract import GUARD, RegistryContract, RegistryFactory, receive, unit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry_factory(tmp_path: Path) -> RegistryFactory:
    numbers = itertools.count()

    def make(clock: ManualClock, history: int) -> SqliteRegistry:
        return SqliteRegistry(tmp_path / f"registry-{next(numbers)}.db", clock, history=history)

    return make


class TestSqliteRegistry(RegistryContract):
    pass


@pytest.mark.anyio
async def test_state_revision_and_history_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    clock = ManualClock()
    async with SqliteRegistry(path, clock) as registry:
        await registry.put_unit("a.service", unit(), desired_state="launched")
        await registry.set_machine("a.service", "m1")
        leader = await registry.campaign("m1", ttl=30)
    async with SqliteRegistry(path, clock) as registry:
        assert await registry.revision() == 3
        assert await registry.get_unit("a.service") == UnitRecord(
            "a.service", unit().serialize(), unit().hash, "launched", 1
        )
        assert (await registry.machine_schedule("m1")).entries["a.service"].revision == 2
        assert await registry.leader() == leader
        assert await registry.put_unit("b.service", unit()) == 4
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            assert [c.revision for c in await receive(changes, 4)] == [1, 2, 3, 4]
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_database_is_wal_with_full_sync_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    async with SqliteRegistry(path, ManualClock()):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RegistryError, match="newer"), anyio.fail_after(GUARD):
        async with SqliteRegistry(path, ManualClock()):
            pass


@pytest.mark.anyio
async def test_not_a_database_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"this is not a database, but long enough to look like a header" * 10)
    with pytest.raises(RegistryError, match="cannot open"):
        async with SqliteRegistry(path, ManualClock()):
            pass


@pytest.mark.anyio
async def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    """Group commit: 50 writers at once need far fewer transactions than writes."""
    registry = SqliteRegistry(tmp_path / "registry.db", ManualClock())
    batches: list[int] = []
    commit = registry._commit

    def counting(batch: list[Operation[Tx]]) -> None:
        batches.append(len(batch))
        commit(batch)

    async def put(name: str) -> None:
        await registry.put_unit(name, unit())

    registry._committer._commit = counting
    async with registry:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(put, f"u{i}.service")
        assert await registry.revision() == 50
    assert sum(batches) == 50
    assert len(batches) < 50


def test_sqlite_registry_is_a_registry(tmp_path: Path) -> None:
    """Checked by mypy: the class satisfies the Registry protocol (constructing it opens nothing)."""
    registry: Registry = SqliteRegistry(tmp_path / "registry.db", ManualClock())
    assert not (tmp_path / "registry.db").exists()
    assert registry is not None
