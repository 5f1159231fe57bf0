"""DockerRuntime: the runtime contract on a real engine, and what only the real runtime has to get right.

What a real engine cannot be made to do on demand (drop the event stream, fail a pull half-way) is played by a
small stand-in engine on a unix socket.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import orjson
import pytest
from aiohttp import web

from fleetlet.exec.docker_runtime import DEFAULT_HOST, DockerRuntime, _Lines
from fleetlet.exec.runtime import ContainerEvent, EngineUnavailable, LogLine, NoSuchImage
from tests.runtime_contract import SLEEPER, Harness, RuntimeContract

pytestmark = pytest.mark.integration


class TestDockerRuntimeContract(RuntimeContract):
    pass


def _open_connections(runtime: DockerRuntime) -> int:
    # aiohttp has no public count of connections in use; this is the test's only look inside it.
    connector = runtime._client().connector
    return len(connector._acquired)


@pytest.mark.anyio
@pytest.mark.parametrize("operation", ["wait", "follow_logs", "watch_events", "exec"])
async def test_a_cancelled_call_leaves_no_connection_open(harness: Harness, operation: str) -> None:
    runtime = harness.runtime
    assert isinstance(runtime, DockerRuntime)
    container = await harness.run(SLEEPER)
    calls = {
        "wait": lambda: runtime.wait(container),
        "follow_logs": lambda: runtime.follow_logs(container, lambda line: None),
        "watch_events": lambda: runtime.watch_events(lambda event: None),
        "exec": lambda: runtime.exec(container, ["sleep", "30"], lambda line: None),
    }
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(calls[operation])
            while _open_connections(runtime) == 0:  # cancel once the request is at the engine
                await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert _open_connections(runtime) == 0


def test_the_engine_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///from/the/environment.sock")
    assert DockerRuntime().url == "unix:///from/the/environment.sock"
    assert DockerRuntime("tcp://127.0.0.1:2375").url == "tcp://127.0.0.1:2375"
    monkeypatch.delenv("DOCKER_HOST")
    assert DockerRuntime().url == DEFAULT_HOST == "unix:///var/run/docker.sock"


@pytest.mark.anyio
async def test_no_engine_at_the_address() -> None:
    async with DockerRuntime("unix:///nonexistent/fleetlet/docker.sock") as runtime:
        with pytest.raises(EngineUnavailable) as caught:
            await runtime.ping()
        assert caught.value.status == 0
        with pytest.raises(EngineUnavailable):
            await runtime.inspect("anything")


@asynccontextmanager
async def stand_in_engine(routes: web.RouteTableDef) -> AsyncIterator[str]:
    """Serve ``routes`` (and ``/version``) on a unix socket as a stand-in engine; yields its address."""

    @routes.get("/version")
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.41"})

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    # Unix socket paths are short; pytest's tmp_path can be too deep.
    with tempfile.TemporaryDirectory(prefix="fleetlet-") as directory:
        socket = str(Path(directory) / "engine.sock")
        try:
            await web.UnixSite(runner, socket).start()
            yield f"unix://{socket}"
        finally:
            await runner.cleanup()


@pytest.mark.anyio
async def test_events_end_with_engine_unavailable_when_the_stream_closes() -> None:
    routes = web.RouteTableDef()
    die = {
        "Type": "container",
        "Action": "die",
        "Actor": {"ID": "abc", "Attributes": {"exitCode": "3", "image": "busybox", "name": "x", "fleetlet.unit": "a"}},
        "timeNano": 1_800_000_000_500_000_000,
    }

    @routes.get("/v1.41/events")
    async def events(request: web.Request) -> web.StreamResponse:
        assert orjson.loads(request.query["filters"]) == {"type": ["container"]}
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(orjson.dumps(die) + b"\n")
        return response  # the daemon shutting down

    received: list[ContainerEvent] = []
    async with stand_in_engine(routes) as url, DockerRuntime(url) as runtime:
        with pytest.raises(EngineUnavailable):
            await runtime.watch_events(received.append)
    assert received == [ContainerEvent("die", "abc", {"fleetlet.unit": "a"}, exit_code=3, time=1_800_000_000.5)]


@pytest.mark.anyio
async def test_a_pull_that_fails_in_the_stream() -> None:
    routes = web.RouteTableDef()

    @routes.post("/v1.41/images/create")
    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"status":"Pulling from library/app","id":"1.0"}\n')
        await response.write(b'{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}\n')
        return response

    lines: list[str] = []
    async with stand_in_engine(routes) as url, DockerRuntime(url) as runtime:
        with pytest.raises(NoSuchImage, match="manifest unknown") as caught:
            await runtime.pull("app", "1.0", lines.append)
    assert caught.value.image == "app:1.0"
    assert lines == ["1.0: Pulling from library/app"]


@pytest.mark.anyio
async def test_a_connection_cut_mid_answer_is_engine_unavailable() -> None:
    routes = web.RouteTableDef()

    @routes.post("/v1.41/containers/abc/wait")
    async def wait(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"Status')
        assert request.transport is not None
        request.transport.close()  # the daemon died
        return response

    async with stand_in_engine(routes) as url, DockerRuntime(url) as runtime:
        with pytest.raises(EngineUnavailable):
            await runtime.wait("abc")


def test_lines_are_cut_at_newlines_and_partial_lines_wait() -> None:
    lines: list[LogLine] = []
    out = _Lines("stdout", lines.append)
    out.feed(b"one\r\ntw")
    assert lines == [LogLine("stdout", "one")]
    out.feed(b"o\n\xc3")  # a character split across frames
    out.feed(b"\xa9t\xc3\xa9\nlast words")
    assert [line.text for line in lines] == ["one", "two", "été"]
    out.feed(b"", final=True)
    assert lines[-1] == LogLine("stdout", "last words")
