"""Time, as a port: the real clock in production, a manual one in tests.

Restart backoff, start limits, timeouts, heartbeats and TTLs all read time through a :class:`Clock`, so tests move
time forward with ``clock.advance(30)`` and assert exact virtual times instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for intervals and deadlines."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch; for timestamps people read."""

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (math.inf: until cancelled)."""


class SystemClock:
    """The real clock: the event loop's monotonic time and the system's wall time."""

    def monotonic(self) -> float:
        # What asyncio's loop.time() returns, without anyio.current_time()'s lookup of the backend: a microsecond,
        # which the event stream pays on every write to every subscriber.
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        if math.isinf(seconds):
            await anyio.sleep_forever()
        await anyio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; sleepers wake when :meth:`advance` passes their deadline."""

    def __init__(self, start: float = 0.0, epoch: float = 1_800_000_000.0) -> None:
        self._now = start
        self._epoch = epoch
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if math.isinf(seconds):
            await anyio.sleep_forever()
        woken = anyio.Event()
        entry = (self._now + seconds, next(self._order), woken)
        heapq.heappush(self._sleepers, entry)
        try:
            await woken.wait()
        finally:
            if not woken.is_set():  # cancelled: forget the sleeper
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, woken = heapq.heappop(self._sleepers)
            woken.set()

    @property
    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes, or None if nobody sleeps."""
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Let every task run until all are blocked.

        A few checkpoints first: on asyncio, ``wait_all_tasks_blocked`` polls every 0.1 s while any task can run,
        and most of the time a handful of turns is all the tasks need.
        """
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        await anyio.wait_all_tasks_blocked()

    async def advance_to_next(self) -> float:
        """Jump to the next deadline, let tasks run, and return the new time (tests' fast-forward)."""
        await self.settle()
        deadline = self.next_deadline
        if deadline is None:
            raise RuntimeError("nothing is sleeping on this clock")
        self.advance(deadline - self._now)
        await self.settle()
        return self._now


@dataclass(slots=True)
class Deadline:
    """The outcome of :func:`move_on_after`: whether time ran out before the block finished."""

    expired: bool = False


def move_on_after(clock: Clock, seconds: float) -> AbstractAsyncContextManager[Deadline]:
    """Cancel the block when ``seconds`` pass on ``clock`` (math.inf: never); ``expired`` says if that happened.

    anyio's own ``move_on_after`` reads the event loop's clock, which a ManualClock cannot move; on the
    SystemClock, whose time *is* the event loop's, a plain cancel scope with a deadline does: it costs a fraction
    of a task group and a watchdog task, and the gossip opens one for every exchange.
    """
    if type(clock) is SystemClock:
        return _ScopeDeadline(seconds)
    return _watchdog(clock, seconds)


class _ScopeDeadline:
    """move_on_after on the event loop's own clock: one cancel scope, no generator, no task."""

    __slots__ = ("_deadline", "_scope")

    def __init__(self, seconds: float) -> None:
        self._scope = anyio.move_on_after(seconds)
        self._deadline = Deadline()

    async def __aenter__(self) -> Deadline:
        self._scope.__enter__()
        return self._deadline

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        suppressed = self._scope.__exit__(exc_type, exc, tb)
        self._deadline.expired = self._scope.cancelled_caught
        return bool(suppressed)


@asynccontextmanager
async def _watchdog(clock: Clock, seconds: float) -> AsyncIterator[Deadline]:
    """move_on_after on any other clock: a watchdog task sleeps on it and cancels the block."""
    deadline = Deadline()
    try:
        async with anyio.create_task_group() as tg:
            if not math.isinf(seconds):

                async def watchdog() -> None:
                    await clock.sleep(seconds)
                    deadline.expired = True
                    tg.cancel_scope.cancel()

                tg.start_soon(watchdog)
            yield deadline
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watchdog never fails, so a group holds the block's own exception: raise it as the block raised it,
        # as anyio.move_on_after would, rather than wrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
