"""The unit journal: both implementations pass the same tests; the file journal's disk behaviour on top."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import orjson
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetlet.clock import ManualClock
from fleetlet.exec.runtime import LogLine
from fleetlet.service.journal import (
    FileJournal,
    Journal,
    JournalEntry,
    MemoryJournal,
    format_entry,
    journal_file_name,
    log_sink,
)

UNIT = "hello.service"
EPOCH = 1_800_000_000.0  # ManualClock's wall time at 0: Jan 15 2027 08:00:00 UTC

MakeJournal = Callable[[ManualClock], Journal]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["file", "memory"])
def make_journal(request: pytest.FixtureRequest, tmp_path: Path) -> MakeJournal:
    if request.param == "file":
        return lambda clock: FileJournal(tmp_path / "journal", UNIT, clock)
    return lambda clock: MemoryJournal(UNIT, clock)


@pytest.fixture
def journal(make_journal: MakeJournal, clock: ManualClock) -> Iterator[Journal]:
    journal = make_journal(clock)
    yield journal
    journal.close()


@pytest.fixture
def utc() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


async def settle() -> None:
    """Let every task run until blocked; a few checkpoints first spare asyncio's 0.1 s polling in the common case."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def messages(entries: list[JournalEntry]) -> list[str]:
    return [e.message for e in entries]


# --- both implementations ---------------------------------------------------------------------------------------


def test_write_then_tail_in_order_with_clock_time(journal: Journal, clock: ManualClock) -> None:
    journal.write("Starting HelloWorldApp...")
    clock.advance(1.5)
    journal.write("Hello World", "stdout")
    journal.write("oops", "stderr")

    assert journal.tail(10) == [
        JournalEntry(EPOCH, "fleetlet", "Starting HelloWorldApp..."),
        JournalEntry(EPOCH + 1.5, "stdout", "Hello World"),
        JournalEntry(EPOCH + 1.5, "stderr", "oops"),
    ]
    assert journal.unit == UNIT


@pytest.mark.parametrize(("n", "expected"), [(0, []), (-1, []), (1, ["m4"]), (3, ["m2", "m3", "m4"]), (99, None)])
def test_tail_returns_the_last_n(journal: Journal, n: int, expected: list[str] | None) -> None:
    for i in range(5):
        journal.write(f"m{i}")
    assert messages(journal.tail(n)) == (expected if expected is not None else [f"m{i}" for i in range(5)])


def test_tail_of_an_empty_journal(journal: Journal) -> None:
    assert journal.tail(10) == []


@pytest.mark.parametrize(
    "message",
    ["", "with\nnewline", 'quotes " and \\ backslash', "ünïcödé ✓ 🚀", "\x00\x1f control", "lone \udcff surrogate"],
)
def test_any_text_survives_or_is_repaired(journal: Journal, message: str) -> None:
    journal.write(message, "stdout")
    [entry] = journal.tail(1)
    assert entry.message == message or "\udcff" in message  # a lone surrogate cannot be stored as UTF-8 text
    assert entry.stream == "stdout"


def test_log_sink_writes_output_lines_on_their_stream(journal: Journal) -> None:
    sink = log_sink(journal)
    sink(LogLine("stdout", "out"))
    sink(LogLine("stderr", "err"))
    assert [(e.stream, e.message) for e in journal.tail(2)] == [("stdout", "out"), ("stderr", "err")]


@pytest.mark.anyio
async def test_follow_delivers_backlog_then_live_entries(journal: Journal, clock: ManualClock) -> None:
    for i in range(15):
        journal.write(f"old {i}")
    seen: list[JournalEntry] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(seen.append, last=3))
        await settle()
        assert messages(seen) == ["old 12", "old 13", "old 14"]

        clock.advance(2)
        journal.write("new", "stdout")
        await settle()
        assert seen[-1] == JournalEntry(EPOCH + 2, "stdout", "new")
        tg.cancel_scope.cancel()
    assert len(seen) == 4


@pytest.mark.anyio
async def test_follow_with_last_zero_gets_only_new_entries(journal: Journal) -> None:
    journal.write("before")
    seen: list[JournalEntry] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(seen.append, last=0))
        await settle()
        journal.write("after")
        await settle()
        tg.cancel_scope.cancel()
    assert messages(seen) == ["after"]


@pytest.mark.anyio
async def test_every_follower_gets_every_entry(journal: Journal) -> None:
    first: list[JournalEntry] = []
    second: list[JournalEntry] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(first.append))
        tg.start_soon(lambda: journal.follow(second.append))
        await settle()
        for i in range(3):
            journal.write(f"m{i}")
        await settle()
        tg.cancel_scope.cancel()
    assert messages(first) == messages(second) == ["m0", "m1", "m2"]


@pytest.mark.anyio
async def test_follow_into_a_stream_ends_when_its_receiver_goes(journal: Journal) -> None:
    send, receive = anyio.create_memory_object_stream[JournalEntry](10)
    journal.write("backlog")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(send))
        await settle()
        assert receive.receive_nowait().message == "backlog"
        receive.close()
        journal.write("nobody listens")  # follow notices and returns: the group ends without being cancelled
    send.close()


@pytest.mark.anyio
async def test_closing_the_journal_ends_followers(journal: Journal) -> None:
    seen: list[JournalEntry] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: journal.follow(seen.append, last=0))
        await settle()
        journal.write("last words")
        journal.close()
    assert messages(seen) == ["last words"]
    journal.write("after close")  # ignored, not an error
    await journal.follow(seen.append, last=0)  # returns at once


async def _drain(receive: MemoryObjectReceiveStream[JournalEntry], count: int) -> list[str]:
    got = []
    for _ in range(count):
        got.append((await receive.receive()).message)
        await settle()
    return got


@pytest.mark.anyio
async def test_slow_follower_loses_entries_and_is_told_but_never_blocks_the_writer(journal: Journal) -> None:
    # The follower hands entries to a stream nobody reads yet: it stalls with its 2-entry buffer full.
    send, receive = anyio.create_memory_object_stream[JournalEntry](0)
    with send, receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: journal.follow(send, last=0, buffer=2))
            await settle()
            for i in range(10):
                journal.write(f"m{i}")  # synchronous: returns although nobody reads
            await settle()

            # m0 went straight to the waiting follower, m1 and m2 into its buffer; m3..m9 were dropped.
            assert await _drain(receive, 4) == ["m0", "m1", "m2", "-- 7 entries dropped --"]
            journal.write("m10")
            assert await _drain(receive, 1) == ["m10"]
            tg.cancel_scope.cancel()
    assert len(journal.tail(100)) == 11  # the journal itself lost nothing


@pytest.mark.anyio
async def test_dropped_marker_stands_where_the_gap_is(journal: Journal) -> None:
    send, receive = anyio.create_memory_object_stream[JournalEntry](0)
    with send, receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: journal.follow(send, last=0, buffer=2))
            await settle()
            for i in range(5):
                journal.write(f"m{i}")  # m0 in flight, m1 m2 buffered, m3 m4 dropped
            await settle()
            assert await _drain(receive, 1) == ["m0"]  # frees one buffer slot
            journal.write("m5")  # the slot takes the marker for m3 m4; m5 itself is dropped
            journal.write("m6")  # dropped too
            assert await _drain(receive, 4) == ["m1", "m2", "-- 2 entries dropped --", "-- 2 entries dropped --"]
            journal.write("m7")
            assert await _drain(receive, 1) == ["m7"]
            tg.cancel_scope.cancel()


# --- format ------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("utc")
@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (JournalEntry(EPOCH, "fleetlet", "Starting HelloWorldApp..."), "Jan 15 08:00:00 fleetlet: Starting Hel"),
        (
            JournalEntry(EPOCH + 86400 * 300 + 3723.9, "stdout", "Hello World"),
            "Nov 11 09:02:03 hello.service[stdout]: ",
        ),
        (JournalEntry(EPOCH + 59.999, "stderr", ""), "Jan 15 08:00:59 hello.service[stderr]: "),
    ],
)
def test_format_entry_is_journalctl_short(entry: JournalEntry, line: str) -> None:
    formatted = format_entry(entry, UNIT)
    assert formatted.startswith(line)
    assert formatted.endswith(entry.message)


# --- MemoryJournal -----------------------------------------------------------------------------------------------


def test_memory_journal_keeps_only_the_newest(clock: ManualClock) -> None:
    journal = MemoryJournal(UNIT, clock, max_entries=3)
    for i in range(5):
        journal.write(f"m{i}")
    assert messages(journal.tail(10)) == ["m2", "m3", "m4"]


# --- FileJournal on disk -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("hello.service", "hello.service.journal"),
        ("web@8080.service", "web@8080.service.journal"),
        ("a:b_c-d.service", "a:b_c-d.service.journal"),
        ("../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd.journal"),
        ("a/b", "a%2Fb.journal"),
        ("a%2Fb", "a%252Fb.journal"),
        ("..", "%2E..journal"),
        ("", "%.journal"),
        ("x\\x2dy.service", "x%5Cx2dy.service.journal"),
        ("ü", "%C3%BC.journal"),
    ],
)
def test_journal_file_name_is_safe_and_distinct(unit: str, name: str) -> None:
    assert journal_file_name(unit) == name
    assert "/" not in name


def _sizes(journal: FileJournal) -> int:
    return sum(p.stat().st_size for p in (journal.path, journal.previous_path) if p.exists())


def test_rotation_keeps_the_total_under_the_cap(tmp_path: Path, clock: ManualClock) -> None:
    journal = FileJournal(tmp_path, UNIT, clock, max_bytes=8192)
    for i in range(2000):
        journal.write(f"line {i:04d} " + "x" * (i % 97))
        assert _sizes(journal) <= 8192
    assert journal.previous_path.exists()
    assert journal.path.stat().st_size <= 4096
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["hello.service.journal", "hello.service.journal.1"]
    tail = messages(journal.tail(10_000))
    # Whatever is kept is the newest entries, contiguous, across both files.
    assert len(tail) > 40
    first = int(tail[0].split()[1])
    assert [int(m.split()[1]) for m in tail] == list(range(first, 2000))
    journal.close()


def test_tail_reaches_into_the_previous_file(tmp_path: Path, clock: ManualClock) -> None:
    journal = FileJournal(tmp_path, UNIT, clock, max_bytes=4096)
    i = 0
    while not journal.previous_path.exists():
        journal.write(f"m{i}")
        i += 1
    # Just rotated: the current file holds the newest entry only.
    assert messages(journal.tail(3)) == [f"m{i - 3}", f"m{i - 2}", f"m{i - 1}"]
    journal.close()


def test_tail_reads_only_the_end_of_a_big_file(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / journal_file_name(UNIT)
    line = orjson.dumps({"time": EPOCH, "stream": "stdout", "message": "y" * 100}) + b"\n"
    path.write_bytes(line * 19_000)  # about 2 MiB, just under half the default cap
    journal = FileJournal(tmp_path, UNIT, clock)
    journal.write("newest")

    read = 0
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        nonlocal read
        read += length
        return real_pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    tail = journal.tail(10)
    assert messages(tail)[-1] == "newest"
    assert len(tail) == 10
    assert read <= 32 * 1024
    journal.close()


def test_a_new_journal_continues_the_old_files(tmp_path: Path, clock: ManualClock) -> None:
    first = FileJournal(tmp_path, UNIT, clock)
    first.write("before restart")
    first.close()
    second = FileJournal(tmp_path, UNIT, clock)
    second.write("after restart")
    assert messages(second.tail(5)) == ["before restart", "after restart"]
    second.close()


def test_a_line_cut_by_a_crash_is_skipped_and_ended(tmp_path: Path, clock: ManualClock) -> None:
    first = FileJournal(tmp_path, UNIT, clock)
    first.write("complete")
    first.close()
    with first.path.open("ab") as f:
        f.write(b'{"time": 1800000000.0, "stream": "stdout", "mess')  # kill -9 in the middle of a write

    second = FileJournal(tmp_path, UNIT, clock)
    assert messages(second.tail(5)) == ["complete"]
    second.write("next")
    assert messages(second.tail(5)) == ["complete", "next"]
    second.close()


def test_an_oversized_message_is_cut_to_fit(tmp_path: Path, clock: ManualClock) -> None:
    journal = FileJournal(tmp_path, UNIT, clock, max_bytes=8192)
    journal.write("\x01" * 100_000)
    [entry] = journal.tail(1)
    assert entry.message.endswith("…")
    assert _sizes(journal) <= 4096
    journal.close()


def test_the_cap_has_a_floor(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="at least"):
        FileJournal(tmp_path, UNIT, clock, max_bytes=100)


@pytest.mark.anyio
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_full_disk_is_counted_and_logged_once(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal = FileJournal(tmp_path, UNIT, clock)
    journal.path.symlink_to("/dev/full")  # every write fails with ENOSPC
    seen: list[JournalEntry] = []
    with caplog.at_level(logging.WARNING, logger="fleetlet.service.journal"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: journal.follow(seen.append, last=0))
            await settle()
            for i in range(3):
                journal.write(f"m{i}")  # does not raise
            await settle()
            tg.cancel_scope.cancel()
    assert journal.write_errors == 3
    assert len(caplog.records) == 1
    assert "No space left on device" in caplog.records[0].getMessage()
    assert messages(seen) == ["m0", "m1", "m2"]  # followers still hear everything
    journal.close()


def test_writing_recovers_when_the_disk_does(tmp_path: Path, clock: ManualClock) -> None:
    blocker = tmp_path / "journal"
    blocker.write_text("a file where the directory should be")
    journal = FileJournal(blocker, UNIT, clock)
    journal.write("lost")
    assert journal.write_errors == 1

    blocker.unlink()
    journal.write("kept")
    assert messages(journal.tail(5)) == ["kept"]
    assert journal.write_errors == 1
    journal.close()


def test_journal_entries_are_one_json_object_per_line(tmp_path: Path, clock: ManualClock) -> None:
    journal = FileJournal(tmp_path, UNIT, clock)
    journal.write("a\nb", "stdout")
    journal.close()
    lines = journal.path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"time": EPOCH, "stream": "stdout", "message": "a\nb"}]
