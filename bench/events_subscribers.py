"""Websocket subscribers of :mod:`bench.bench_events`, one process of many: ``python -m bench.events_subscribers
SOCKET COUNT``.

Each subscriber reads the whole stream, frame by frame, every frame split on newlines (a server may put several
events in one). It counts every live event, by index, to tell losses, duplicates and disorder, and samples the
latency of one event in :data:`SAMPLE_EVERY` (by index, so that every subscriber samples the same ones): the wall
time the frame came in, less the ``sent`` stamp of the payload. Only events published in the measured window are
samples. The snapshot (events marked ``"snapshot": true`` first) and heartbeats are skipped; an error frame
(``too-slow``: the server dropped us) ends the subscriber and is reported.

The subscribers must cost little, since they share the machine with the server: a frame of consecutive events
(the common case) is checked in bulk, by one regular expression over the frame for the indexes (the hub's events
and the baseline's begin with ``{"index":N,``) compared as text with the ones expected, and only the sampled
events' ``sent`` stamps are read. Anything else (the snapshot, control documents, a gap) goes line by line.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Final

import aiohttp
import anyio
import orjson
from aiohttp import WSMsgType

from bench.events_protocol import LAST, PATH, Schedule, hear_schedule, say, sleep_until

SAMPLE_EVERY: Final = 10
CONCURRENT_CONNECTS: Final = 25
NICENESS: Final = 10
MAX_FRAME: Final = 64 * 1024 * 1024
_EVENT_START: Final = '{"index":'
_LAST_MARK: Final = f'"{LAST}":true'
# Where a document begins: an event (its index captured) or a control document (nothing captured). Neither form
# occurs inside an event: its inner objects begin with other keys.
_LINE_STARTS: Final = re.compile(r'\{"(?:index":(\d+),|type":)')
_SENT: Final = re.compile(r'"sent":([-+.eE0-9]+)')


@dataclass(slots=True)
class _Window:
    """The measured window, once the coordinator's schedule has said it: until then nothing is in it."""

    measure: float = float("inf")
    end: float = float("inf")


class _Digits:
    """Indexes in decimal, made once for every subscriber of the process: comparing a frame's indexes as text with
    the ones expected costs less than converting them."""

    def __init__(self) -> None:
        self._base = -1
        self._text: list[str] = []

    def between(self, first: int, end: int) -> list[str]:
        """``str(i)`` for ``first <= i < end``."""
        if self._base < 0 or first < self._base:
            self._base, self._text = first, []
        made = self._base + len(self._text)
        if end > made:
            self._text.extend(map(str, range(made, end + 1024)))
        return self._text[first - self._base : end - self._base]


_DIGITS: Final = _Digits()


@dataclass(slots=True)
class Subscriber:
    first: int = -1
    last: int = -1
    events: int = 0
    missing: int = 0
    duplicates: int = 0
    snapshot: int = 0
    heartbeats: int = 0
    frames: int = 0
    in_window: int = 0  # events received during the measured window, whenever published
    errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    complete: bool = False  # got the last event
    samples: list[int] = field(default_factory=list)  # microseconds

    def take(self, data: str, received: float, window: _Window) -> None:
        """One frame's events and control documents."""
        self.frames += 1
        if self.first < 0 or not self._take_run(data, received, window):
            for line in data.split("\n"):  # JSON escapes the newlines of strings: a raw one ends a document
                self._take_line(line, received, window)
        if received >= window.end and _LAST_MARK in data:
            self.complete = True

    def _take_run(self, data: str, received: float, window: _Window) -> bool:
        """The common case in bulk, in C but for a few steps a frame: a frame of events only, continuing the stream
        with consecutive indexes. False, having taken nothing, for anything else."""
        found = _LINE_STARTS.findall(data)  # an event's index, or "" for a control document
        first = self.last + 1
        end = first + len(found)
        if found != _DIGITS.between(first, end):
            return False
        self.last = end - 1
        self.events += len(found)
        if window.measure <= received < window.end:
            self.in_window += len(found)
        position = 0
        for index in range(first + -first % SAMPLE_EVERY, end, SAMPLE_EVERY):
            position = data.index(f"{_EVENT_START}{index},", position)
            sent = _SENT.search(data, position)
            assert sent is not None, "an event without its sent stamp"
            self._sample(float(sent.group(1)), received, window)
        return True

    def _take_line(self, line: str, received: float, window: _Window) -> None:
        if not line:
            return
        if not line.startswith(_EVENT_START):
            self._control(line)
            return
        if self.first < 0 and self.snapshot_line(line):
            return
        index = int(line[9 : line.index(",", 9)])
        if self.first < 0:
            self.first = index
        elif index != self.last + 1:
            if index <= self.last:
                self.duplicates += 1
                return
            self.missing += index - self.last - 1
        self.last = index
        self.events += 1
        if window.measure <= received < window.end:
            self.in_window += 1
        if index % SAMPLE_EVERY == 0:
            self._sample(orjson.loads(line)["payload"]["sent"], received, window)

    def _sample(self, sent: float, received: float, window: _Window) -> None:
        if window.measure <= sent < window.end:
            self.samples.append(round((received - sent) * 1_000_000))

    def snapshot_line(self, line: str) -> bool:
        if '"snapshot":true' in line:
            self.snapshot += 1
            return True
        return False

    def _control(self, line: str) -> None:
        doc = orjson.loads(line)
        if doc.get("type") == "heartbeat":
            self.heartbeats += 1
        else:
            self.errors.append(str(doc.get("code", doc)))


async def _follow(ws: aiohttp.ClientWebSocketResponse, subscriber: Subscriber, window: _Window) -> None:
    while not subscriber.complete and not subscriber.errors:
        message = await ws.receive()
        if message.type is not WSMsgType.TEXT:
            subscriber.close_code = ws.close_code
            return
        subscriber.take(message.data, time.time(), window)


async def run(socket: str, count: int) -> None:
    subscribers = [Subscriber() for _ in range(count)]
    window = _Window()
    connected = 0
    all_connected = anyio.Event()
    # Moved to the schedule's deadline once it comes: a subscriber still waiting for the last event then gives up.
    scopes = [anyio.CancelScope() for _ in range(count)]
    limiter = anyio.Semaphore(CONCURRENT_CONNECTS)
    cpu: dict[str, float] = {}
    connector = aiohttp.UnixConnector(socket, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def subscribe(i: int) -> None:
            nonlocal connected
            async with limiter:
                ws = await session.ws_connect(f"http://localhost{PATH}", max_msg_size=MAX_FRAME)
            try:
                connected += 1
                if connected == count:
                    all_connected.set()
                with scopes[i]:
                    await _follow(ws, subscribers[i], window)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await ws.close()

        async def meter(schedule: Schedule) -> None:
            await sleep_until(schedule.measure)
            wall, before = time.time(), os.times()
            await sleep_until(schedule.end)
            after = os.times()
            cpu.update(seconds=time.time() - wall, user=after.user - before.user, system=after.system - before.system)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(subscribe, i)
            await all_connected.wait()
            say({"connected": count})
            schedule = await hear_schedule()
            if schedule is None:
                tg.cancel_scope.cancel()
                return
            window.measure, window.end = schedule.measure, schedule.end
            deadline = anyio.current_time() + schedule.deadline - time.time()
            for scope in scopes:
                scope.deadline = deadline
            tg.start_soon(meter, schedule)
    say({"cpu": cpu, "subscribers": [asdict(s) for s in subscribers]})


def main() -> None:
    parser = argparse.ArgumentParser(description="websocket subscribers of bench.bench_events")
    parser.add_argument("socket")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    # The subscribers stand for other machines: on this one they must not take the CPU the server needs. At equal
    # priority the kernel would give each of the five processes a fifth of two cores, the server included.
    os.nice(NICENESS)
    anyio.run(run, args.socket, args.count)


if __name__ == "__main__":
    main()
