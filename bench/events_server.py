"""The server side of :mod:`bench.bench_events`, one process: ``python -m bench.events_server MODE SOCKET``.

``fleetlet``: what the agent serves, ``fleet_v1_app`` over a MemoryRegistry with an EventHub, on a unix socket;
the hub starts out remembering the states of :data:`UNITS` units, so that each subscriber gets a snapshot first.

``baseline`` / ``baseline-per-event``: the floor of the transport, a bare aiohttp websocket broadcast. One handler
per client keeps a cursor into a shared list of pre-encoded events and sends whatever is new at each wake-up, as
one frame (newline-separated) or one frame per event. No hub, no filters, no heartbeats, nothing of fleetlet.

Either way a publisher task publishes :data:`~bench.events_protocol.RATE` events a second on the real clock, in
ticks, each a unit's ``state`` ``changed`` event with a payload like the agent's and the wall time of publishing.
The process measures itself over the schedule's measured window: CPU time (user and system), RSS, how late the
publisher's ticks were and how late a 5 ms sleep wakes up (the event loop's lag: a saturated loop wakes late).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import orjson
from aiohttp import WSMsgType, web

from bench.events_protocol import (
    LAST,
    PER_TICK,
    TICK,
    Schedule,
    hear_schedule,
    say,
    sleep_until,
    until_coordinator_leaves,
)
from fleetlet.api import StaticView, fleet_v1_app
from fleetlet.clock import SystemClock
from fleetlet.events.hub import EventHub
from fleetlet.events.model import state_key
from fleetlet.registry import MemoryRegistry

MODES: Final = ("fleetlet", "baseline", "baseline-per-event")
UNITS: Final = 100  # units of this machine whose states change, in turn
MACHINE_ID: Final = "2c9ab7a9e1b94d4c8f3a5e6d7c8b9a01"
UNIT_HASH: Final = "9f3c1a6be2d54f0718a9c3e5d7b1f2a4c6e8d0b2"
PROBE_SECONDS: Final = 0.005

Publish = Callable[[int, bool], int]  # (sequence number, last?) -> the event's index


def _unit(sequence: int) -> str:
    return f"web@{sequence % UNITS}.service"


def _payload(sequence: int, last: bool) -> dict[str, Any]:
    """A state change as the agent's StateFeed publishes it (about 550 bytes of JSON with the envelope)."""
    up = sequence % 2 == 0
    payload: dict[str, Any] = {
        "name": _unit(sequence),
        "machineID": MACHINE_ID,
        "hash": UNIT_HASH,
        "load": "loaded",
        "active": "active" if up else "activating",
        "sub": "running" if up else "start",
        "result": "success",
        "since": 1_800_000_000.0 + sequence,
        "restarts": sequence // UNITS,
        "containerID": f"{sequence % UNITS:064x}",
        "previous": {
            "load": "loaded",
            "active": "activating" if up else "active",
            "sub": "start" if up else "running",
            "result": "success",
        },
        "sent": time.time(),
    }
    if last:
        payload[LAST] = True
    return payload


# --- the two servers ---------------------------------------------------------------------------------------------


def _fleetlet() -> tuple[web.Application, Publish]:
    clock = SystemClock()
    hub = EventHub(clock)
    for sequence in range(UNITS):
        payload = _payload(sequence, last=False)
        hub.remember("state", "changed", state_key(payload["name"], MACHINE_ID), payload)
    app = fleet_v1_app(MemoryRegistry(clock), view=StaticView(), clock=clock, events=hub)

    def publish(sequence: int, last: bool) -> int:
        payload = _payload(sequence, last)
        return hub.publish("state", "changed", state_key(payload["name"], MACHINE_ID), payload).index

    return app, publish


class _Broadcast:
    """Pre-encoded events in a list, and a wake-up for the handlers waiting for the next one."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.published = asyncio.Event()

    def publish(self, sequence: int, last: bool) -> int:
        index = len(self.frames) + 1
        payload = _payload(sequence, last)
        doc = {"index": index, "time": time.time(), "topic": "state", "type": "changed", "key": payload["name"]}
        self.frames.append(orjson.dumps({**doc, "payload": payload}))
        self.published.set()
        self.published = asyncio.Event()
        return index


def _baseline(per_event: bool) -> tuple[web.Application, Publish]:
    broadcast = _Broadcast()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        cursor = len(broadcast.frames)  # before the handshake, as the hub's subscription is
        await ws.prepare(request)

        async def pump() -> None:
            nonlocal cursor
            frames = broadcast.frames
            try:
                while True:
                    published = broadcast.published
                    if cursor == len(frames):
                        await published.wait()
                    new, cursor = frames[cursor:], len(frames)
                    if per_event:
                        for frame in new:
                            await ws.send_frame(frame, WSMsgType.TEXT)
                    else:
                        await ws.send_frame(b"\n".join(new), WSMsgType.TEXT)
            except ConnectionError:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            async for _ in ws:  # answers pings; returns when the client closes
                pass
            tg.cancel_scope.cancel()
        return ws

    app = web.Application()
    app.add_routes([web.get("/v1/events", handler)])
    return app, broadcast.publish


# --- the publisher and the meters --------------------------------------------------------------------------------


async def _publisher(schedule: Schedule, publish: Publish, late: list[float]) -> tuple[int, int, int]:
    """Publish from ``schedule.start`` to ``schedule.end``, then the last event: (first index, last, how many).

    Ticks are due on a fixed grid, so a late tick does not slow the rate: the ticks it delayed follow at once.
    """
    await sleep_until(schedule.start)
    first = last = -1
    published = tick = 0
    while (due := schedule.start + tick * TICK) < schedule.end:
        now = time.time()
        if now < due:
            await anyio.sleep(due - now)
            now = time.time()
        if due >= schedule.measure:
            late.append(now - due)
        for _ in range(PER_TICK):
            last = publish(published, False)
            first = last if first < 0 else first
            published += 1
        tick += 1
    await sleep_until(schedule.end)  # so that a subscriber need only look for it in what comes after the end
    last = publish(published, True)
    return first, last, published + 1


async def _loop_lag(schedule: Schedule, lags: list[float]) -> None:
    await sleep_until(schedule.measure)
    while time.time() < schedule.end:
        start = time.perf_counter()
        await anyio.sleep(PROBE_SECONDS)
        lags.append(time.perf_counter() - start - PROBE_SECONDS)


def _memory_mib() -> tuple[float, float]:
    """(RSS, peak RSS) in MiB, from /proc/self/status."""
    fields: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


async def _window(schedule: Schedule) -> dict[str, float]:
    """CPU and memory over the measured window, as late as the loop wakes us: the real span is reported."""
    await sleep_until(schedule.measure)
    wall, before, (rss_start, _) = time.time(), os.times(), _memory_mib()
    await sleep_until(schedule.end)
    after, (rss_end, peak) = os.times(), _memory_mib()
    return {
        "seconds": time.time() - wall,
        "cpu_user": after.user - before.user,
        "cpu_system": after.system - before.system,
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_peak_mib": peak,
    }


def _spread_ms(seconds: list[float]) -> dict[str, float]:
    if len(seconds) < 2:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    quantiles = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": quantiles[49] * 1000, "p99": quantiles[98] * 1000, "max": max(seconds) * 1000}


async def _run(schedule: Schedule, publish: Publish) -> dict[str, Any]:
    late: list[float] = []
    lags: list[float] = []
    window: dict[str, float] = {}
    indexes = (0, 0, 0)

    async def publisher() -> None:
        nonlocal indexes
        indexes = await _publisher(schedule, publish, late)

    async def meter() -> None:
        window.update(await _window(schedule))

    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher)
        tg.start_soon(meter)
        tg.start_soon(_loop_lag, schedule, lags)
    first, last, published = indexes
    return {
        "first": first,
        "last": last,
        "published": published,
        "window": window,
        "tick_late_ms": _spread_ms(late),
        "loop_lag_ms": _spread_ms(lags),
    }


async def serve(mode: str, socket: str) -> None:
    app, publish = _fleetlet() if mode == "fleetlet" else _baseline(per_event=mode == "baseline-per-event")
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        # Hundreds of clients connect at once: the default backlog of 128 would refuse some.
        await web.UnixSite(runner, socket, backlog=2048).start()
        say({"ready": mode})
        schedule = await hear_schedule()
        if schedule is None:
            return
        say(await _run(schedule, publish))
        await until_coordinator_leaves()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("socket")
    args = parser.parse_args()
    anyio.run(serve, args.mode, args.socket)


if __name__ == "__main__":
    main()
