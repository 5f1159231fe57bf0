"""SQLite registry: acknowledged durable writes per second, and listing 10,000 units.

Baseline, measured in the same run on the same disk: plain sqlite3, one INSERT + COMMIT per row in a loop, WAL and
``synchronous=FULL`` like the registry. Every registry write counted here was committed with an fsync before its
revision came back; concurrent writers share commits (group commit), never skip them.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

from fleetlet.clock import SystemClock
from fleetlet.registry import SqliteRegistry
from fleetlet.units.syntax import parse

WRITES = 400
CONCURRENT_WRITERS = 50
CONCURRENT_WRITES = 2_000
LISTED_UNITS = 10_000


def _unit(i: int) -> str:
    return f"[Unit]\nDescription=bench {i}\n\n[Service]\nExecStart=/usr/bin/docker run --rm busybox sleep {i}\n"


def _baseline(directory: Path) -> float:
    conn = sqlite3.connect(directory / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (name TEXT PRIMARY KEY, text TEXT)")
    start = time.perf_counter()
    for i in range(WRITES):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (f"u{i}.service", _unit(i)))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return WRITES / elapsed


async def _sequential(directory: Path) -> float:
    units = [parse(_unit(i)) for i in range(WRITES)]
    async with SqliteRegistry(directory / "sequential.db", SystemClock()) as registry:
        start = time.perf_counter()
        for i, unit in enumerate(units):
            await registry.put_unit(f"u{i}.service", unit)
        return WRITES / (time.perf_counter() - start)


async def _concurrent(directory: Path, path: str, writes: int) -> float:
    units = [parse(_unit(i)) for i in range(writes)]
    per_writer = writes // CONCURRENT_WRITERS
    async with SqliteRegistry(directory / path, SystemClock()) as registry:

        async def writer(w: int) -> None:
            for i in range(w * per_writer, (w + 1) * per_writer):
                await registry.put_unit(f"u{i:05d}.service", units[i])

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(CONCURRENT_WRITERS):
                tg.start_soon(writer, w)
        return per_writer * CONCURRENT_WRITERS / (time.perf_counter() - start)


async def _listing(directory: Path) -> tuple[float, float]:
    """Best time to list every unit: in one page, and in pages of the default size."""
    await _concurrent(directory, "listing.db", LISTED_UNITS)
    one_page = paged = float("inf")
    async with SqliteRegistry(directory / "listing.db", SystemClock()) as registry:
        for _ in range(5):
            start = time.perf_counter()
            page = await registry.list_units(limit=LISTED_UNITS)
            one_page = min(one_page, time.perf_counter() - start)
            assert len(page.units) == LISTED_UNITS
            start = time.perf_counter()
            count, token = 0, None
            while True:
                page = await registry.list_units(after=token)
                count += len(page.units)
                if (token := page.next_token) is None:
                    break
            paged = min(paged, time.perf_counter() - start)
            assert count == LISTED_UNITS
    return one_page, paged


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetlet-bench-", dir=Path.cwd()) as name:
        directory = Path(name)
        baseline = _baseline(directory)
        sequential = anyio.run(_sequential, directory)
        concurrent = anyio.run(_concurrent, directory, "concurrent.db", CONCURRENT_WRITES)
        one_page, paged = anyio.run(_listing, directory)
    print(f"SQLite registry: durable writes (WAL, synchronous=FULL), files under {Path.cwd()}")
    print(f"  baseline  sqlite3 INSERT + COMMIT loop          {baseline:>10,.0f} writes/s")
    print(
        f"  fleetlet  put_unit, one writer                  {sequential:>10,.0f} writes/s"
        f"  ({sequential / baseline:.2f}x baseline)"
    )
    print(
        f"  fleetlet  put_unit, {CONCURRENT_WRITERS} writers, group commit     {concurrent:>10,.0f} writes/s"
        f"  ({concurrent / baseline:.1f}x baseline)"
    )
    print(f"  fleetlet  list {LISTED_UNITS:,} units, one page           {one_page * 1000:>10.1f} ms")
    print(f"  fleetlet  list {LISTED_UNITS:,} units, pages of 1,000     {paged * 1000:>10.1f} ms")


if __name__ == "__main__":
    main()
