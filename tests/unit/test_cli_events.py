"""``fleetlet events``: the line format (a pure function, table-driven) and the command through ``main([...])``
against the event stream on a unix socket.

``main`` runs its own event loop, so the command runs in a worker thread while the test's loop serves the API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from fleetlet.api import fleet_v1_app
from fleetlet.cli.events import event_json, format_event
from fleetlet.cli.main import main
from fleetlet.client import Event
from fleetlet.clock import ManualClock
from fleetlet.events.hub import EventHub
from fleetlet.registry import MemoryRegistry

T = 1_800_000_063.0  # 2027-01-15 08:01:03 UTC
M1 = "1a2b3c4d5e6f70819293a4b5c6d7e8f9"
M2 = "5e6f7a8b00000000000000000000000a"
FIRST = 1000

Run = tuple[int, str, str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(topic: str, type_: str, key: str, payload: dict[str, Any], *, snapshot: bool = False) -> Event:
    return Event(7, T, topic, type_, key, payload, snapshot)


# --- the line ----------------------------------------------------------------------------------------------------


HELLO = "hello.service"
STATE = {"name": HELLO, "machineID": M1, "load": "loaded", "active": "active", "sub": "running", "result": "success"}
JOURNAL = {"name": HELLO, "machineID": M1, "stream": "stdout", "message": "Hello World"}
WAS = {"load": "loaded", "active": "activating", "sub": "start", "result": "success"}


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (event("unit", "submitted", HELLO, {"name": HELLO, "hash": "abc"}), "08:01:03 unit hello.service submitted"),
        (
            event(
                "unit", "desired-state-changed", HELLO, {"desiredState": "launched", "previousDesiredState": "loaded"}
            ),
            "08:01:03 unit hello.service desired launched (was loaded)",
        ),
        (
            event("unit", "replaced", HELLO, {"name": HELLO, "hash": "0123456789abcdef"}),
            "08:01:03 unit hello.service replaced (hash 0123456)",
        ),
        (event("unit", "destroyed", HELLO, {"name": HELLO}), "08:01:03 unit hello.service destroyed"),
        (
            event("schedule", "placed", HELLO, {"name": HELLO, "machineID": M1}),
            "08:01:03 schedule hello.service placed on 1a2b3c4d",
        ),
        (
            event("schedule", "moved", HELLO, {"name": HELLO, "machineID": M2, "previousMachineID": M1}),
            "08:01:03 schedule hello.service moved to 5e6f7a8b (from 1a2b3c4d)",
        ),
        (
            event("schedule", "unplaced", "x.service", {"name": "x.service", "reason": "machine 1a2b3c4d left"}),
            "08:01:03 schedule x.service unplaced: machine 1a2b3c4d left",
        ),
        (
            event(
                "schedule",
                "unplaced",
                "x.service",
                {"name": "x.service", "reasons": ["machine 1a2b3c4d: metadata region=us", "machine 5e6f7a8b: full"]},
            ),
            "08:01:03 schedule x.service unplaced: machine 1a2b3c4d: metadata region=us; machine 5e6f7a8b: full",
        ),
        (
            event("state", "changed", f"{HELLO}@{M1}", {**STATE, "previous": WAS}),
            "08:01:03 state hello.service@1a2b3c4d active/running (was activating/start)",
        ),
        (
            event(
                "state",
                "changed",
                f"{HELLO}@{M1}",
                {**STATE, "active": "failed", "sub": "failed", "result": "exit-code", "previous": STATE},
            ),
            "08:01:03 state hello.service@1a2b3c4d failed/failed exit-code (was active/running)",
        ),
        (
            event(
                "state", "changed", f"{HELLO}@{M1}", {**STATE, "load": "not-found", "active": "inactive", "sub": "dead"}
            ),
            "08:01:03 state hello.service@1a2b3c4d not-found inactive/dead",
        ),
        (
            event("machine", "joined", M1, {"id": M1, "primaryIP": "10.0.0.5", "metadata": {"region": "eu", "a": "b"}}),
            "08:01:03 machine 1a2b3c4d joined 10.0.0.5 a=b,region=eu",
        ),
        (event("machine", "dead", M1, {"id": M1}), "08:01:03 machine 1a2b3c4d dead"),
        (event("leader", "elected", "leader", {"machineID": M1}), "08:01:03 leader 1a2b3c4d elected"),
        (event("leader", "lost", "leader", {}), "08:01:03 leader lost"),
        (event("other", "line", HELLO, {"text": "hi"}), "08:01:03 other hello.service line"),
        (
            event("journal", "entry", HELLO, {**JOURNAL, "time": T - 2}),  # printed at the entry's own time
            "08:01:01 journal hello.service[stdout]: Hello World",
        ),
        (
            event("journal", "entry", HELLO, {**JOURNAL, "stream": "fleetlet", "message": "Started hello.service."}),
            "08:01:03 journal hello.service[fleetlet]: Started hello.service.",
        ),
        (event("journal", "entry", HELLO, {"time": "soon", "message": "x"}), "08:01:03 journal hello.service: x"),
        (
            event("unit", "submitted", HELLO, {"name": HELLO}, snapshot=True),
            "= 08:01:03 unit hello.service submitted",
        ),
    ],
)
def test_one_readable_line_per_event(given: Event, line: str) -> None:
    assert format_event(given, UTC) == line


@pytest.mark.parametrize("topic", ["unit", "schedule", "state", "machine", "leader", "journal", "other"])
@pytest.mark.parametrize("type_", ["submitted", "desired-state-changed", "replaced", "placed", "moved", "unplaced"])
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"name": 1, "machineID": None, "previous": "x", "metadata": ["a"], "reasons": "r", "hash": 5, "load": {}},
        {"previous": {"active": 3}, "metadata": {"k": 1}, "reasons": [None, "only this"]},
        {"time": True, "stream": 2, "message": None},
    ],
)
def test_a_payload_missing_or_mistyping_fields_still_gives_a_line(topic: str, type_: str, payload: Any) -> None:
    line = format_event(event(topic, type_, "key@m", payload), UTC)
    assert line.startswith(f"08:01:03 {topic} ")
    assert "None" not in line


def test_the_key_stands_in_for_a_payload_without_names() -> None:
    assert format_event(event("state", "changed", f"{HELLO}@{M1}", {}), UTC) == "08:01:03 state hello.service@1a2b3c4d"
    assert format_event(event("machine", "left", M2, {}), UTC) == "08:01:03 machine 5e6f7a8b left"
    assert format_event(event("unit", "destroyed", HELLO, {}), UTC) == "08:01:03 unit hello.service destroyed"


@pytest.fixture
def time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the process's local time zone, for the test only."""

    def set_zone(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def test_the_local_time_by_default(time_zone: Callable[[str], None]) -> None:
    time_zone("Asia/Kolkata")  # UTC+5:30, no daylight saving time
    assert format_event(event("leader", "lost", "leader", {})) == "13:31:03 leader lost"


def test_json_is_the_event_as_the_stream_carries_it() -> None:
    live = event("unit", "submitted", HELLO, {"name": HELLO})
    assert orjson.loads(event_json(live)) == {
        "index": 7,
        "time": T,
        "topic": "unit",
        "type": "submitted",
        "key": HELLO,
        "payload": {"name": HELLO},
    }
    assert orjson.loads(event_json(event("leader", "lost", "leader", {}, snapshot=True)))["snapshot"] is True


# --- the command -------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock()
        self.hub = EventHub(self.clock, first_index=FIRST)
        self.requested = anyio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self, hub: EventHub | None = None) -> None:
        self.hub = hub or self.hub

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/v1/events":
                self.requested.set()
            return await handler(request)

        app = fleet_v1_app(MemoryRegistry(ManualClock()), clock=self.clock, events=self.hub)
        app.middlewares.append(record)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, time_zone: Callable[[str], None]) -> AsyncIterator[Api]:
    monkeypatch.delenv("FLEETCTL_ENDPOINT", raising=False)
    monkeypatch.delenv("FLEETLET_ENDPOINT", raising=False)
    time_zone("UTC")
    api = Api(tmp_path / "api.sock")
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def fleetctl(api: Api, capsys: pytest.CaptureFixture[str]) -> Callable[..., Awaitable[Run]]:
    async def run(*args: str) -> Run:
        capsys.readouterr()
        status = await anyio.to_thread.run_sync(main, [*args, "--endpoint", f"unix://{api.path}"])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


async def until_the_index_is_lost(api: Api, fleetctl: Callable[..., Awaitable[Run]], *args: str) -> Run:
    """Run the command until it has the stream's events so far, then restart the agent with a new hub: the
    index it resumes from is lost, which ends it."""
    result: list[Run] = []

    async def command() -> None:
        result.append(await fleetctl("events", *args))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(command)
            await api.requested.wait()
            await api.stop()  # the events already sent come before the close
            await api.start(EventHub(api.clock, first_index=FIRST + 100))
    return result[0]


@pytest.mark.anyio
async def test_events_prints_one_line_per_event_until_the_stream_ends(api: Api, fleetctl: Any) -> None:
    api.hub.publish("unit", "submitted", HELLO, {"name": HELLO})
    api.hub.publish("schedule", "placed", HELLO, {"name": HELLO, "machineID": M1})
    api.hub.publish("state", "changed", f"{HELLO}@{M1}", {**STATE, "previous": WAS})
    status, out, err = await until_the_index_is_lost(api, fleetctl, "--index", str(FIRST))
    assert out == (
        "08:00:00 unit hello.service submitted\n"
        "08:00:00 schedule hello.service placed on 1a2b3c4d\n"
        "08:00:00 state hello.service@1a2b3c4d active/running (was activating/start)\n"
    )
    assert (status, err) == (
        1,
        f"Error: the events after index {FIRST + 3} are no longer kept: start again without an index\n",
    )


@pytest.mark.anyio
async def test_events_json_prints_the_stream_as_ndjson(api: Api, fleetctl: Any) -> None:
    published = [
        api.hub.publish("machine", "joined", M1, {"id": M1}),
        api.hub.publish("leader", "elected", "leader", {}),
    ]
    api.hub.publish("unit", "submitted", HELLO, {"name": HELLO})  # filtered out
    status, out, _ = await until_the_index_is_lost(
        api, fleetctl, "--json", "--topic", "machine", "--topic", "leader", "--index", str(FIRST)
    )
    assert status == 1
    assert [orjson.loads(line) for line in out.splitlines()] == [orjson.loads(e.json) for e in published]


@pytest.mark.anyio
async def test_an_index_already_lost_is_one_line_and_exit_1(api: Api, fleetctl: Any) -> None:
    assert await fleetctl("events", "--index", "5") == (
        1,
        "",
        "Error: the events after index 5 are no longer kept: start again without an index\n",
    )


@pytest.mark.anyio
async def test_a_topic_the_agent_does_not_know_is_its_error(fleetctl: Any) -> None:
    status, out, err = await fleetctl("events", "--topic", "units")
    assert (status, out) == (1, "")
    known = "unit, schedule, state, machine, leader, journal"
    assert err == f"Error: unknown topic 'units': expected one of {known} (HTTP 400)\n"


@pytest.mark.anyio
async def test_an_unreachable_agent_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"unix://{tmp_path / 'none.sock'}"
    status = await anyio.to_thread.run_sync(main, ["events", "--endpoint", endpoint])
    assert (status, capsys.readouterr().err) == (
        1,
        f"Error: cannot reach the fleet API at {endpoint}: no such socket\n",
    )


@pytest.mark.anyio
async def test_a_bad_index_is_a_usage_error(fleetctl: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        await fleetctl("events", "--index", "-3")
    assert info.value.code == 2
    assert "not an event index: '-3'" in capsys.readouterr().err
