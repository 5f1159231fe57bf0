"""What the processes of the event-stream benchmark (:mod:`bench.bench_events`) tell each other, one JSON line at a
time: the server and every subscriber process say they are ready on stdout, the coordinator answers with the
:class:`Schedule` on their stdin, and each says what it measured on stdout when the run is over.

All times are wall-clock seconds (``time.time()``): the processes share one machine, so one process's stamp is
comparable with another's. That is also how a subscriber tells an event's delivery latency: the publisher puts
the wall time of publishing in the payload (``"sent"``), the subscriber subtracts it from the time it got it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import anyio
import orjson

RATE: Final = 1_000  # events a second
TICK: Final = 0.010  # seconds: the publisher publishes RATE * TICK events at a time, as a busy agent would
PER_TICK: Final = round(RATE * TICK)
# The payload key of the stream's last event, which tells the subscribers that everything has been published.
LAST: Final = "last"
PATH: Final = "/v1/events"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One run: publishing from ``start`` to ``end``; measured from ``measure`` to ``end`` (what comes before is
    the warm-up); subscribers give up waiting for the last event at ``deadline``."""

    start: float
    measure: float
    end: float
    deadline: float

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str | bytes) -> Schedule:
        return cls(**orjson.loads(line))


def say(message: dict[str, Any]) -> None:
    """One line to the coordinator."""
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


async def hear_schedule() -> Schedule | None:
    """The coordinator's schedule; None when it went away before sending one (stdin closed)."""
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    return Schedule.from_json(line) if line else None


async def until_coordinator_leaves() -> None:
    """Return when the coordinator closes our stdin: it is done with us, or it died."""
    await anyio.to_thread.run_sync(sys.stdin.read)


async def sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        await anyio.sleep(delay)
