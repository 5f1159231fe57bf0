"""A unit's journal on its owning machine: what journald keeps for one unit.

The supervisor's own messages (stream ``fleetlet``) and the unit's output (``stdout``, ``stderr``) go to one
ordered log that ``fleetctl journal`` tails and follows. :class:`FileJournal` keeps it on disk in capped NDJSON files;
:class:`MemoryJournal` keeps it in memory for fast tests. Both satisfy :class:`Journal`.

Writing is synchronous and never raises: supervision must go on when the disk is full. Followers are fed through
bounded in-process streams; a follower too slow to keep up loses entries, learns how many from a marker entry, and
never slows the writer down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock
from fleetlet.exec.runtime import LogLine, LogSink

JournalStream = Literal["fleetlet", "stdout", "stderr"]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
MIN_MAX_BYTES = 4096  # room for a few truncated lines in each half
DEFAULT_FOLLOW_BUFFER = 256
_READ_BLOCK = 16 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SAFE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.@-")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    time: float  # wall-clock seconds since the epoch
    stream: JournalStream
    message: str


JournalSink: TypeAlias = Callable[[JournalEntry], None] | MemoryObjectSendStream[JournalEntry]


class Journal(Protocol):
    """One unit's log. Call it from the event loop's thread only."""

    @property
    def unit(self) -> str: ...

    def write(self, message: str, stream: JournalStream = "fleetlet") -> None:
        """Append an entry stamped with the clock's wall time. Never raises, never blocks."""

    def tail(self, n: int) -> list[JournalEntry]:
        """The last ``n`` entries, oldest first."""

    async def follow(self, sink: JournalSink, *, last: int = 10, buffer: int = DEFAULT_FOLLOW_BUFFER) -> None:
        """Deliver the last ``last`` entries, then each new one, until cancelled or the journal is closed.

        Returns early if ``sink`` is a stream whose receiver went away. ``buffer`` bounds what may queue up for
        this follower; beyond it entries are dropped and a ``-- N entries dropped --`` entry says so.
        """

    def close(self) -> None:
        """End every follower; later writes are ignored."""


def log_sink(journal: Journal) -> LogSink:
    """A runtime :data:`LogSink` that writes each output line to ``journal`` on its own stream."""

    def sink(line: LogLine) -> None:
        journal.write(line.text, line.stream)

    return sink


def format_entry(entry: JournalEntry, unit: str) -> str:
    """journalctl's short format, without the host: ``Nov 26 12:01:03 hello.service[stdout]: Hello World``.

    The supervisor's own messages come from ``fleetlet``, as systemd's come from ``systemd[1]``; like systemd's,
    they name the unit themselves where it matters (``hello.service: Main process exited, ...``).
    """
    t = time.localtime(entry.time)
    stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    ident = "fleetlet" if entry.stream == "fleetlet" else f"{unit}[{entry.stream}]"
    return f"{stamp} {ident}: {entry.message}"


def journal_file_name(unit: str) -> str:
    """A file name for ``unit`` that cannot escape its directory or collide with another unit's.

    Valid unit names pass through unchanged; any other byte is percent-encoded, and so is a leading dot.
    """
    safe = "".join(ch if ch in _SAFE_NAME_CHARS else "".join(f"%{b:02X}" for b in ch.encode()) for ch in unit)
    if safe.startswith(".") or not safe:
        safe = "%2E" + safe[1:] if safe else "%"
    return f"{safe}.journal"


class _Follower:
    """One follower's end of the fan-out: a bounded stream and a count of what it missed."""

    def __init__(self, send: MemoryObjectSendStream[JournalEntry], clock: Clock) -> None:
        self.send = send
        self.dropped = 0
        self._clock = clock

    def offer(self, entry: JournalEntry) -> bool:
        """Queue ``entry`` without blocking; False once the follower has gone away."""
        try:
            if self.dropped:
                # The gap comes before this entry, so its marker does too.
                self.send.send_nowait(self.marker())
                self.dropped = 0
            self.send.send_nowait(entry)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    def marker(self) -> JournalEntry:
        """The entry saying how many entries were lost since the last marker."""
        noun = "entry" if self.dropped == 1 else "entries"
        return JournalEntry(self._clock.time(), "fleetlet", f"-- {self.dropped} {noun} dropped --")


class _FanOut:
    """Hands each written entry to every follower, never waiting for any of them."""

    __slots__ = ("_clock", "_closed", "_followers")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._followers: set[_Follower] = set()
        self._closed = False

    def publish(self, entry: JournalEntry) -> None:
        for follower in list(self._followers):
            if not follower.offer(entry):
                self._followers.discard(follower)

    def close(self) -> None:
        self._closed = True
        for follower in self._followers:
            follower.send.close()
        self._followers.clear()

    async def follow(
        self, backlog: Callable[[int], list[JournalEntry]], sink: JournalSink, last: int, buffer: int
    ) -> None:
        send, receive = anyio.create_memory_object_stream[JournalEntry](max(buffer, 1))
        follower = _Follower(send, self._clock)
        with send, receive:
            if self._closed:
                send.close()
            else:
                self._followers.add(follower)
            try:
                # Subscribed and read with no await between: nothing is missed or seen twice.
                for entry in backlog(last) if last > 0 else []:
                    if not await _deliver(sink, entry):
                        return
                while True:
                    if follower.dropped and receive.statistics().current_buffer_used == 0:
                        # Caught up with everything queued: the gap is now, so report it now.
                        marker, follower.dropped = follower.marker(), 0
                        if not await _deliver(sink, marker):
                            return
                    try:
                        entry = await receive.receive()
                    except anyio.EndOfStream:
                        return
                    if not await _deliver(sink, entry):
                        return
            finally:
                self._followers.discard(follower)


async def _deliver(sink: JournalSink, entry: JournalEntry) -> bool:
    if isinstance(sink, MemoryObjectSendStream):
        try:
            await sink.send(entry)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
    else:
        sink(entry)
    return True


class MemoryJournal:
    """A journal in memory, keeping the last ``max_entries`` entries; for tests and for units without a disk."""

    def __init__(self, unit: str, clock: Clock, max_entries: int = 10_000) -> None:
        self._unit = unit
        self._clock = clock
        self._entries: deque[JournalEntry] = deque(maxlen=max_entries)
        self._fanout = _FanOut(clock)
        self._closed = False

    @property
    def unit(self) -> str:
        return self._unit

    def write(self, message: str, stream: JournalStream = "fleetlet") -> None:
        if self._closed:
            return
        entry = JournalEntry(self._clock.time(), stream, message)
        self._entries.append(entry)
        self._fanout.publish(entry)

    def tail(self, n: int) -> list[JournalEntry]:
        if n <= 0:
            return []
        return list(self._entries)[-n:]

    async def follow(self, sink: JournalSink, *, last: int = 10, buffer: int = DEFAULT_FOLLOW_BUFFER) -> None:
        await self._fanout.follow(self.tail, sink, last, buffer)

    def close(self) -> None:
        self._closed = True
        self._fanout.close()


class FileJournal:
    """A journal in ``directory``: ``<unit>.journal`` plus one rotated ``.journal.1``, together under ``max_bytes``.

    Each entry is one NDJSON line written with a single unbuffered ``write``, so a ``kill -9`` loses at most the
    line in flight (a power cut may lose more: there is no fsync). When the current file would pass half the cap it
    becomes the previous file, replacing the older one. One FileJournal per unit and directory at a time.
    """

    __slots__ = ("_clock", "_closed", "_fanout", "_fd", "_file", "_half", "_size", "_unit", "write_errors")

    def __init__(self, directory: Path, unit: str, clock: Clock, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}")
        self._unit = unit
        self._clock = clock
        self._half = max_bytes // 2
        # Kept as one string rather than Path objects: an agent keeps a journal open for every unit it runs.
        self._file = os.path.join(directory, journal_file_name(unit))
        self.write_errors = 0
        self._fd: int | None = None
        self._size = 0
        self._closed = False
        self._fanout = _FanOut(clock)

    @property
    def unit(self) -> str:
        return self._unit

    @property
    def directory(self) -> Path:
        return Path(self._file).parent

    @property
    def path(self) -> Path:
        return Path(self._file)

    @property
    def previous_path(self) -> Path:
        return Path(self._file + ".1")

    def write(self, message: str, stream: JournalStream = "fleetlet") -> None:
        if self._closed:
            return
        entry = JournalEntry(self._clock.time(), stream, message)
        line = _encode(entry, self._half)
        try:
            if self._fd is None:
                self._open()
            if self._size > 0 and self._size + len(line) > self._half:
                self._rotate()
            self._append(line)
        except OSError as exc:
            self._failed(exc)
        # Followers hear about the entry even when the disk did not take it.
        self._fanout.publish(entry)

    def tail(self, n: int) -> list[JournalEntry]:
        """Read backwards from the end of the current file, then of the previous one, only as far as needed."""
        found: list[JournalEntry] = []
        for path in (self.path, self.previous_path):
            if len(found) >= n:
                break
            with contextlib.closing(_lines_backward(path)) as lines:
                for line in lines:
                    entry = _decode(line)
                    if entry is not None:
                        found.append(entry)
                        if len(found) >= n:
                            break
        found.reverse()
        return found

    async def follow(self, sink: JournalSink, *, last: int = 10, buffer: int = DEFAULT_FOLLOW_BUFFER) -> None:
        await self._fanout.follow(self.tail, sink, last, buffer)

    def close(self) -> None:
        self._closed = True
        self._close_file()
        self._fanout.close()

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self._file), exist_ok=True)
        fd = os.open(self._file, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line cut short by a crash: end it, so the next entry starts on a line of its own.
                size += os.write(fd, b"\n")
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, size

    def _rotate(self) -> None:
        self._close_file()
        os.replace(self._file, self._file + ".1")
        self._open()

    def _append(self, line: bytes) -> None:
        assert self._fd is not None
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _failed(self, exc: OSError) -> None:
        # Reopen on the next write: the disk may have room again by then.
        self._close_file()
        self.write_errors += 1
        if self.write_errors == 1:
            _log.warning(
                "journal of %s: cannot write to %s: %s; entries are lost until it works again "
                "(further errors are counted, not logged)",
                self._unit,
                self.path,
                exc,
            )


def _encode(entry: JournalEntry, limit: int) -> bytes:
    """One NDJSON line of at most ``limit`` bytes; an oversized message is cut, an unencodable one repaired."""
    message = entry.message
    for _ in range(3):
        try:
            line = orjson.dumps(
                {"time": entry.time, "stream": entry.stream, "message": message}, option=orjson.OPT_APPEND_NEWLINE
            )
        except orjson.JSONEncodeError:  # lone surrogates, from undecodable bytes upstream
            message = message.encode("utf-8", "replace").decode("utf-8")
            continue
        if len(line) <= limit:
            return line
        # A character takes at most 6 bytes in JSON (\u001f); keep what surely fits.
        message = message[: max((limit - 128) // 6, 0)] + "…"
    return orjson.dumps({"time": entry.time, "stream": entry.stream, "message": ""}, option=orjson.OPT_APPEND_NEWLINE)


def _decode(line: bytes) -> JournalEntry | None:
    """The entry on ``line``; None for a line a crash cut short or anything else unreadable."""
    try:
        data = orjson.loads(line)
        stream = data["stream"]
        if stream not in ("fleetlet", "stdout", "stderr"):
            return None
        return JournalEntry(float(data["time"]), stream, str(data["message"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _lines_backward(path: Path) -> Generator[bytes, None, None]:
    """The non-empty lines of ``path`` from last to first, reading the file block by block from its end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        position = os.fstat(fd).st_size
        carry = b""  # the start of a line whose beginning lies further back
        while position > 0:
            step = min(_READ_BLOCK, position)
            position -= step
            block = os.pread(fd, step, position) + carry
            first, *complete = block.split(b"\n")
            carry = first
            for line in reversed(complete):
                if line:
                    yield line
        if carry:
            yield carry
    finally:
        os.close(fd)
