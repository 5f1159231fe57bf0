"""FakeRuntime: the runtime contract in memory, and what only the fake does (scripted processes, engine restarts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.fake_runtime import Behaviour, Call, ExecRequest, ExecResult, FakeRuntime
from fleetlet.exec.runtime import ContainerEvent, EngineUnavailable, LogLine, NoSuchContainer, NoSuchImage
from tests.runtime_contract import Harness, RuntimeContract, simulate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def harness(clock: ManualClock) -> AsyncIterator[Harness]:
    async def advance(seconds: float) -> None:
        await clock.settle()
        clock.advance(seconds)
        await clock.settle()

    async with FakeRuntime(clock, behaviour=simulate) as fake:
        yield Harness(fake, advance=advance, now=clock.time)


class TestFakeRuntimeContract(RuntimeContract):
    pass


BODY = {"Image": "busybox", "Cmd": ["my-daemon"], "Labels": {"fleetlet.unit": "hello.service"}}


def scripted(behaviour: Behaviour, clock: ManualClock) -> FakeRuntime:
    return FakeRuntime(clock, behaviour=lambda body: behaviour)


async def run(fake: FakeRuntime, body: Mapping[str, Any] | None = None) -> str:
    container = await fake.create(body or BODY)
    await fake.start(container)
    return container


async def history(fake: FakeRuntime) -> list[ContainerEvent]:
    """Every event the engine still remembers."""
    events: list[ContainerEvent] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(fake.watch_events, events.append, since=0))
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    return events


async def test_by_default_a_container_runs_until_signalled(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    assert (await fake.inspect(container)).running
    await fake.kill(container, "SIGUSR1")
    assert await fake.wait(container) == 138


async def test_a_scripted_container_prints_then_exits(clock: ManualClock) -> None:
    fake = scripted(Behaviour(exit_code=1, ignore_signals={"SIGTERM"}, output=["Hello World"]), clock)
    container = await run(fake)
    lines: list[LogLine] = []
    await fake.follow_logs(container, lines.append)
    assert lines == [LogLine("stdout", "Hello World")]
    assert await fake.wait(container) == 1


async def test_a_container_restarts_with_its_behaviour(clock: ManualClock) -> None:
    fake = scripted(Behaviour(exit_code=2, output=["booting"]), clock)
    container = await run(fake)
    await fake.start(container)
    lines: list[LogLine] = []
    await fake.follow_logs(container, lines.append)
    assert [line.text for line in lines] == ["booting", "booting"]


async def test_stop_kills_at_the_exact_virtual_deadline(clock: ManualClock) -> None:
    fake = scripted(Behaviour(ignore_signals={"TERM"}), clock)
    container = await run(fake)
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake.stop, container, 7.5)
        await clock.settle()
        assert clock.next_deadline == 8  # the engine's whole seconds, rounded up
        clock.advance(7.9)
        await clock.settle()
        assert (await fake.inspect(container)).running
        assert await clock.advance_to_next() == 8
    state = await fake.inspect(container)
    assert (state.status, state.exit_code) == ("exited", 137)


async def test_stop_ends_early_when_the_container_exits_in_its_grace_period(clock: ManualClock) -> None:
    fake = scripted(Behaviour(ignore_signals={"SIGTERM"}), clock)
    container = await run(fake)
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake.stop, container, 30)
        await clock.settle()
        clock.advance(3)
        fake.exit(container, 0)
    assert (await fake.inspect(container)).exit_code == 0
    assert clock.next_deadline is None


async def test_stop_uses_the_containers_stop_signal_and_timeout(clock: ManualClock) -> None:
    fake = scripted(Behaviour(ignore_signals={"SIGTERM"}, trap={"SIGQUIT": 0}), clock)
    container = await run(fake, {**BODY, "StopSignal": "SIGQUIT", "StopTimeout": 3})
    assert await fake.stop(container) is True
    assert (await fake.inspect(container)).exit_code == 0
    assert fake.called("stop") == [Call("stop", (container,), {"timeout": None})]
    slow = await run(fake, {**BODY, "StopTimeout": 3})
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake.stop, slow)
        assert await clock.advance_to_next() == 3
    assert (await fake.inspect(slow)).exit_code == 137


async def test_sigkill_cannot_be_ignored(clock: ManualClock) -> None:
    fake = scripted(Behaviour(ignore_signals={"SIGKILL", "SIGTERM"}), clock)
    container = await run(fake)
    await fake.kill(container, "TERM")
    assert (await fake.inspect(container)).running
    await fake.kill(container, "9")
    assert await fake.wait(container) == 137


async def test_exit_and_emit_reach_followers(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    lines: list[LogLine] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(fake.follow_logs, container, lines.append)
        await anyio.wait_all_tasks_blocked()
        fake.emit(container, "stdout", "listening on :80")
        fake.emit(container, "stderr", "warning: no config")
        await anyio.wait_all_tasks_blocked()
        assert len(lines) == 2
        fake.exit(container, 0)
    assert lines == [LogLine("stdout", "listening on :80"), LogLine("stderr", "warning: no config")]


async def test_logs_since_on_the_clock(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    fake.emit(container, "stdout", "early")
    clock.advance(10)
    fake.emit(container, "stdout", "late")
    lines: list[LogLine] = []
    await fake.follow_logs(container, lines.append, since=clock.time(), follow=False)
    assert lines == [LogLine("stdout", "late")]


async def test_an_oom_kill(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    fake.exit(container, 137, oom=True)
    assert [event.action for event in await history(fake)] == ["create", "start", "oom", "die"]
    state = await fake.inspect(container)
    assert (state.exit_code, state.oom_killed) == (137, True)


async def test_driving_a_missing_or_stopped_container(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    with pytest.raises(NoSuchContainer):
        fake.exit("nope", 1)
    container = await fake.create(BODY)
    with pytest.raises(RuntimeError, match="not running"):
        fake.exit(container, 1)


def test_a_misspelt_signal_in_a_behaviour() -> None:
    with pytest.raises(ValueError, match="SIGTREM"):
        Behaviour(ignore_signals={"SIGTREM"})
    with pytest.raises(ValueError, match="'S'"):
        Behaviour(ignore_signals="SIGTERM")


async def test_a_start_error(clock: ManualClock) -> None:
    fake = scripted(Behaviour(start_error='exec: "my-daemon": executable file not found in $PATH'), clock)
    container = await fake.create(BODY)
    with pytest.raises(Exception, match="executable file not found") as caught:
        await fake.start(container)
    assert getattr(caught.value, "status", None) == 400
    state = await fake.inspect(container)
    assert (state.status, state.exit_code) == ("created", 127)
    assert (await fake.inspect_raw(container))["State"]["Error"].startswith("exec:")


async def test_exec_sees_what_it_was_asked_to_run(clock: ManualClock) -> None:
    seen: list[ExecRequest] = []

    def answer(request: ExecRequest) -> ExecResult:
        seen.append(request)
        return ExecResult(3, ["reloaded"])

    fake = scripted(Behaviour(exec=answer), clock)
    container = await run(fake)
    lines: list[LogLine] = []
    status = await fake.exec(container, ["kill", "-HUP", "1"], lines.append, env=["A=1"], user="app", workdir="/srv")
    assert status == 3
    assert lines == [LogLine("stdout", "reloaded")]
    assert seen == [ExecRequest(("kill", "-HUP", "1"), ("A=1",), "app", "/srv")]


async def test_restart_engine_breaks_subscribers_and_kills_containers(clock: ManualClock) -> None:
    def behaviour(body: Mapping[str, Any]) -> Behaviour:
        return Behaviour(ignore_signals={"SIGTERM"} if "stubborn" in body["Labels"] else set())

    fake = FakeRuntime(clock, behaviour=behaviour)
    polite = await run(fake)
    stubborn = await run(fake, {**BODY, "Labels": {"stubborn": "yes"}})
    failures: list[str] = []

    async def expect_unavailable(name: str, call: Callable[[], Awaitable[object]]) -> None:
        with pytest.raises(EngineUnavailable):
            await call()
        failures.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(expect_unavailable, "watch", lambda: fake.watch_events(lambda event: None))
        tg.start_soon(expect_unavailable, "wait", lambda: fake.wait(polite))
        tg.start_soon(expect_unavailable, "logs", lambda: fake.follow_logs(stubborn, lambda line: None))
        await anyio.wait_all_tasks_blocked()
        fake.restart_engine()
    assert sorted(failures) == ["logs", "wait", "watch"]
    assert (await fake.inspect(polite)).exit_code == 143
    assert (await fake.inspect(stubborn)).exit_code == 137
    # The daemon's event history went with it; new subscribers see only new events.
    assert await history(fake) == []


async def test_an_unavailable_engine_refuses_every_call(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            with pytest.raises(EngineUnavailable):
                await fake.wait(container)

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        fake.unavailable = True
    calls: list[Callable[[], Awaitable[object]]] = [
        fake.ping,
        lambda: fake.inspect(container),
        fake.list,
        lambda: fake.pull("busybox", "latest", print),
    ]
    for call in calls:
        with pytest.raises(EngineUnavailable):
            await call()
    fake.unavailable = False
    assert (await fake.inspect(container)).running  # an unreachable engine is not a restarted one


async def test_calls_are_recorded(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await run(fake)
    await fake.stop(container, timeout=5)
    await fake.remove(container, force=True)
    assert [call.method for call in fake.calls] == ["create", "start", "stop", "remove"]
    assert fake.called("stop") == [Call("stop", (container,), {"timeout": 5})]
    assert fake.called("remove") == [Call("remove", (container,), {"force": True, "volumes": False})]


async def test_pull_from_the_fake_registry(clock: ManualClock) -> None:
    fake = FakeRuntime(clock, images=(), registry={"docker.io/library/busybox:latest", "nginx:1.25"})
    assert not await fake.image_present("busybox")
    lines: list[str] = []
    await fake.pull("busybox", "latest", lines.append)
    assert lines[0] == "latest: Pulling from library/busybox"
    assert "Pulling fs layer" in lines[1]
    assert lines[-1] == "Status: Downloaded newer image for busybox:latest"
    assert await fake.image_present("docker.io/library/busybox")
    with pytest.raises(NoSuchImage):
        await fake.pull("nginx", "latest", lines.append)
    await fake.pull("nginx", "1.25", lines.append)
    assert await fake.image_present("nginx:1.25")
    assert not await fake.image_present("nginx")


async def test_list_is_newest_first(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    first = await fake.create(BODY)
    second = await fake.create(BODY)
    assert [state.id for state in await fake.list({"fleetlet.unit": "hello.service"})] == [second, first]


async def test_resolving_by_name_and_id_prefix(clock: ManualClock) -> None:
    fake = FakeRuntime(clock)
    container = await fake.create(BODY, name="hello")
    assert (await fake.inspect("/hello")).id == container
    assert (await fake.inspect(container[:12])).name == "hello"
