"""``GET /v1/units/NAME/journal``: tail, follow, every status code, and how a follower ends.

The API runs as the agent runs it (an AppRunner on a unix socket, whose handlers aiohttp does not cancel when their
client goes away), unless a test asks for aiohttp's handler cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from fleetlet.api import StaticView, fleet_v1_app
from fleetlet.api.journal import CONNECTION_CHECK_SECONDS
from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import Journal, JournalEntry, MemoryJournal, format_entry
from fleetlet.units.model import UnitFile

HELLO = UnitFile.from_options([("Unit", "Description", "Hello"), ("Service", "ExecStart", "/bin/true")])
J = "/v1/units/hello.service/journal"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Api:
    client: aiohttp.ClientSession
    runner: web.AppRunner
    clock: ManualClock  # the API's: paces the followers' connection checks
    journal: MemoryJournal
    handled: list[str]  # the journal requests whose handler has returned, by query string
    returned: anyio.Event  # set each time one has

    def line(self, entry: JournalEntry) -> str:
        return format_entry(entry, "hello.service") + "\n"


@asynccontextmanager
async def serve(tmp_path: Path, *, journal: bool = True, handler_cancellation: bool = False) -> AsyncIterator[Api]:
    clock = ManualClock()
    hello_journal = MemoryJournal("hello.service", ManualClock())
    journals: dict[str, Journal] = {"hello.service": hello_journal} if journal else {}
    handled: list[str] = []
    returned = anyio.Event()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.path.endswith("/journal"):
                handled.append(request.query_string)
                returned.set()

    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("hello.service", HELLO)
        app = fleet_v1_app(registry, view=StaticView(journals=journals), clock=clock)
        app.middlewares.append(record)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=handler_cancellation)
        await runner.setup()
        try:
            await web.UnixSite(runner, str(tmp_path / "api.sock")).start()
            connector = aiohttp.UnixConnector(str(tmp_path / "api.sock"))
            async with aiohttp.ClientSession("http://localhost", connector=connector) as client:
                yield Api(client, runner, clock, hello_journal, handled, returned)
        finally:
            await runner.cleanup()


def write(journal: MemoryJournal, count: int, start: int = 0) -> list[JournalEntry]:
    for i in range(start, start + count):
        journal.write(f"line {i}", "stdout" if i % 2 else "fleetlet")
    return journal.tail(count)


async def get_text(client: aiohttp.ClientSession, path: str) -> tuple[int, str, str]:
    resp = await client.get(path)
    return resp.status, resp.headers.get("Content-Type", ""), (await resp.read()).decode()


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# --- tail --------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_last_ten_entries_by_default_in_journalctls_short_format(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        entries = write(api.journal, 12)
        status, content_type, body = await get_text(api.client, J)
    assert (status, content_type) == (200, "text/plain; charset=utf-8")
    assert body == "".join(api.line(e) for e in entries[2:])
    assert body.splitlines()[-1].endswith(" hello.service[stdout]: line 11")
    assert body.splitlines()[-2].endswith(" fleetlet: line 10")


@pytest.mark.anyio
@pytest.mark.parametrize(("lines", "expected"), [("3", 3), ("0", 0), ("100", 12), ("007", 7)])
async def test_lines_says_how_many_of_the_last_entries(lines: str, expected: int, tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        entries = write(api.journal, 12)
        status, _, body = await get_text(api.client, f"{J}?alt=json&lines={lines}")
    assert status == 200
    assert body == "".join(api.line(e) for e in entries[len(entries) - expected :])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lines=x", "lines must be a non-negative integer, not 'x'"),
        ("lines=-1", "lines must be a non-negative integer, not '-1'"),
        ("lines=1.5", "lines must be a non-negative integer, not '1.5'"),
        ("lines=", "lines must be a non-negative integer, not ''"),
        ("lines=%C2%B2", "lines must be a non-negative integer, not '²'"),
        ("lines=1&lines=2", "too many values for lines"),
        ("follow=yes", "follow must be 1, true, 0 or false, not 'yes'"),
    ],
)
async def test_bad_parameters_are_a_400(query: str, message: str, tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(f"{J}?{query}")
        assert (resp.status, resp.content_type) == (400, "application/json")
        assert orjson.loads(await resp.read()) == error(400, message)


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["", "?follow=1"])
async def test_a_unit_not_in_the_registry_is_a_404(query: str, tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(f"/v1/units/nope.service/journal{query}")
        assert (resp.status, orjson.loads(await resp.read())) == (404, error(404, "unit does not exist"))


@pytest.mark.anyio
@pytest.mark.parametrize("query", ["", "?follow=1", "?follow=true&lines=5"])
async def test_a_unit_no_machine_keeps_a_journal_of_has_an_empty_one(query: str, tmp_path: Path) -> None:
    async with serve(tmp_path, journal=False) as api:
        assert await get_text(api.client, J + query) == (200, "text/plain; charset=utf-8", "")


@pytest.mark.anyio
async def test_the_journal_is_fleetlets_own_resource_not_fleets(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get("/fleet/v1/units/hello.service/journal")
        assert (resp.status, orjson.loads(await resp.read())) == (404, error(404, "resource not found"))
        resp = await api.client.post(J)
        assert resp.status == 405


# --- follow ------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("follow", ["1", "true", "TRUE"])
async def test_follow_sends_the_last_entries_then_each_new_one_until_the_journal_closes(
    follow: str, tmp_path: Path
) -> None:
    async with serve(tmp_path) as api:
        backlog = write(api.journal, 5)
        resp = await api.client.get(f"{J}?lines=2&follow={follow}")
        assert (resp.status, resp.headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
        assert resp.headers["Transfer-Encoding"] == "chunked"
        with anyio.fail_after(5):
            for entry in backlog[3:]:
                assert (await resp.content.readline()).decode() == api.line(entry)
            for i in range(5, 8):
                # Each entry reaches the client as soon as it is written: read before the next is written.
                (entry,) = write(api.journal, 1, start=i)
                assert (await resp.content.readline()).decode() == api.line(entry)
            api.journal.close()
            assert await resp.read() == b""  # the end of the answer
            await api.returned.wait()
        assert api.handled == [f"lines=2&follow={follow}"]


@pytest.mark.anyio
async def test_follow_with_no_lines_sends_only_new_entries(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        write(api.journal, 3)
        resp = await api.client.get(f"{J}?lines=0&follow=1")
        with anyio.fail_after(5):
            (entry,) = write(api.journal, 1, start=3)
            assert (await resp.content.readline()).decode() == api.line(entry)
            api.journal.close()
            assert await resp.read() == b""


@pytest.mark.anyio
@pytest.mark.parametrize("handler_cancellation", [False, True], ids=["agents-runner", "cancelling-runner"])
async def test_a_follower_ends_when_its_client_goes_away(handler_cancellation: bool, tmp_path: Path) -> None:
    """The agent's runner leaves the handler running, which notices at its next check; a runner that cancels
    handlers (aiohttp's test server does) ends it at once, and cleanly."""
    async with serve(tmp_path, handler_cancellation=handler_cancellation) as api:
        (entry,) = write(api.journal, 1)
        resp = await api.client.get(f"{J}?follow=1")
        with anyio.fail_after(5):
            assert (await resp.content.readline()).decode() == api.line(entry)
            resp.close()  # the connection with it
            # The journal stays quiet: nothing is written that could fail.
            while not api.returned.is_set():
                api.clock.advance(CONNECTION_CHECK_SECONDS)
                await api.clock.settle()
        assert api.handled == ["follow=1"]
        # The server goes on serving, the journal too.
        (later,) = write(api.journal, 1, start=1)
        assert await get_text(api.client, f"{J}?lines=1") == (200, "text/plain; charset=utf-8", api.line(later))


@pytest.mark.anyio
async def test_a_follower_does_not_end_while_its_client_stays(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        resp = await api.client.get(f"{J}?follow=1")
        for _ in range(3):
            api.clock.advance(CONNECTION_CHECK_SECONDS)
            await api.clock.settle()
        assert not api.returned.is_set()
        with anyio.fail_after(5):
            (entry,) = write(api.journal, 1)
            assert (await resp.content.readline()).decode() == api.line(entry)
            api.journal.close()
            assert await resp.read() == b""
            await api.returned.wait()


@pytest.mark.anyio
async def test_the_servers_shutdown_ends_every_follower_at_once(tmp_path: Path) -> None:
    # aiohttp waits up to 60 s for the handlers of open connections; the followers must not make it wait.
    with anyio.fail_after(10):
        async with serve(tmp_path) as api:
            first = await api.client.get(f"{J}?follow=1")
            second = await api.client.get(f"{J}?follow=1&lines=0")
            (entry,) = write(api.journal, 1)
            assert (await first.content.readline()).decode() == api.line(entry)
            assert (await second.content.readline()).decode() == api.line(entry)
            await api.runner.cleanup()
            assert sorted(api.handled) == ["follow=1", "follow=1&lines=0"]
            # Each answer ended as an answer does, not cut.
            assert await first.read() == b""
            assert await second.read() == b""
