"""The ContainerRuntime contract: one set of tests that FakeRuntime and DockerRuntime must both pass.

A test module subclasses :class:`RuntimeContract` and provides a ``harness`` fixture giving a :class:`Harness`:
the runtime, labels that mark the test's containers, the engine's clock and a way to let time pass. Containers run
a :class:`Program`, written twice: as a busybox shell script for a real engine, under an init that forwards
signals as a unit's process would get them, and as the fake's :class:`Behaviour` of that script.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from fleetlet.exec.fake_runtime import Behaviour, ExecRequest, ExecResult
from fleetlet.exec.runtime import (
    ContainerEvent,
    ContainerRuntime,
    LogLine,
    NameConflict,
    NoSuchContainer,
    NoSuchImage,
    RuntimeFailure,
)

IMAGE = "busybox"
MISSING_IMAGE = "fleetlet-test-missing-image:nope"
# Generous bounds for things a real engine does in milliseconds; the fake does them at once.
PROMPTLY = 20

# Commands run with exec in a running container, and their simulation.
EXEC_SCRIPT = "echo to stdout; echo to stderr >&2; exit 4"
ENV_SCRIPT = 'echo "$GREETING from $(pwd) as $(id -u)"'


def _simulate_exec(request: ExecRequest) -> ExecResult:
    script = request.argv[-1]
    if script == EXEC_SCRIPT:
        return ExecResult(4, [LogLine("stdout", "to stdout"), LogLine("stderr", "to stderr")])
    if script == ENV_SCRIPT:
        env = dict(item.split("=", 1) for item in request.env)
        return ExecResult(0, [f"{env.get('GREETING', '')} from {request.workdir or '/'} as {request.user or 0}"])
    return ExecResult(127, [LogLine("stderr", f"sh: not simulated: {script}")])


@dataclass(frozen=True)
class Program:
    """What a test container does: ``script`` on a real engine, ``behaviour`` in the fake."""

    script: str
    behaviour: Behaviour


SLEEPER = Program("exec sleep 1000", Behaviour(exec=_simulate_exec))
EXIT_3 = Program("exit 3", Behaviour(exit_code=3))
# It says "ready" once the trap is set, so a test does not signal it before.
IGNORES_TERM = Program('trap "" TERM; echo ready; sleep 1000', Behaviour(output=["ready"], ignore_signals={"SIGTERM"}))
PRINTER = Program(
    "echo out 1; echo err 1 >&2; echo out 2; echo err 2 >&2",
    Behaviour(
        output=[
            LogLine("stdout", "out 1"),
            LogLine("stderr", "err 1"),
            LogLine("stdout", "out 2"),
            LogLine("stderr", "err 2"),
        ],
        exit_code=0,
    ),
)
# Prints while a follower is already attached, then exits.
TALKER = Program(
    "echo one; sleep 0.3; echo two; sleep 0.3; echo three; exit 5",
    Behaviour(output=["one", "two", "three"], exit_code=5),
)

PROGRAMS = {program.script: program for program in (SLEEPER, EXIT_3, IGNORES_TERM, PRINTER, TALKER)}


def simulate(body: Mapping[str, Any]) -> Behaviour:
    """The fake's behaviour hook: the simulation of the script a create body runs."""
    command = body.get("Cmd") or []
    program = PROGRAMS.get(command[-1]) if command else None
    return program.behaviour if program else Behaviour()


@dataclass
class Harness:
    """What a contract test needs from the runtime under test."""

    runtime: ContainerRuntime
    advance: Callable[[float], Awaitable[None]]  # let seconds pass: real time passes alone, the fake's clock is moved
    now: Callable[[], float]  # the engine's wall clock, for ``since``
    labels: Mapping[str, str] = field(default_factory=lambda: {"fleetlet.test": "1", "fleetlet.test.id": _unique()})

    def body(self, program: Program, *, labels: Mapping[str, str] | None = None, **config: Any) -> dict[str, Any]:
        return {
            "Image": IMAGE,
            "Cmd": ["sh", "-c", program.script],
            "Labels": {**self.labels, **(labels or {})},
            "HostConfig": {"Init": True},  # signals reach the script as they reach a unit's process
            **config,
        }

    def name(self) -> str:
        return f"fleetlet-test-{_unique()}"

    async def run(self, program: Program, **labels: str) -> str:
        container = await self.runtime.create(self.body(program, labels=labels))
        await self.runtime.start(container)
        return container

    async def wait_for_line(self, container: str, text: str) -> None:
        """Return once the container has printed ``text``."""
        with anyio.fail_after(PROMPTLY), anyio.CancelScope() as scope:

            def sink(line: LogLine) -> None:
                if line.text == text:
                    scope.cancel()

            await self.runtime.follow_logs(container, sink)
            pytest.fail(f"{container} ended without printing {text!r}")


def _unique() -> str:
    return uuid.uuid4().hex[:12]


def _by_stream(lines: list[LogLine]) -> dict[str, list[str]]:
    return {stream: [line.text for line in lines if line.stream == stream] for stream in ("stdout", "stderr")}


class RuntimeContract:
    """The tests. Subclasses provide the ``harness`` fixture and an ``anyio_backend``."""

    pytestmark = pytest.mark.anyio

    async def test_ping(self, harness: Harness) -> None:
        await harness.runtime.ping()

    async def test_a_container_exits_with_its_code(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await runtime.create(harness.body(EXIT_3))
        assert (await runtime.inspect(container)).status == "created"
        await runtime.start(container)
        assert await runtime.wait(container) == 3
        state = await runtime.inspect(container)
        assert (state.status, state.exit_code, state.running, state.pid) == ("exited", 3, False, 0)

    async def test_waiting_for_a_container_never_started_returns_at_once(self, harness: Harness) -> None:
        container = await harness.runtime.create(harness.body(EXIT_3))
        assert await harness.runtime.wait(container) == 0

    async def test_inspect_by_id_and_by_name(self, harness: Harness) -> None:
        runtime = harness.runtime
        name = harness.name()
        container = await runtime.create(harness.body(SLEEPER, labels={"role": "main"}), name=name)
        await runtime.start(container)
        state = await runtime.inspect(name)
        assert state.id == container
        assert state.name == name
        assert state.image == IMAGE
        assert state.labels == {**harness.labels, "role": "main"}
        assert (state.status, state.running) == ("running", True)
        assert state.pid > 0
        raw = await runtime.inspect_raw(container)
        assert raw["Id"] == container
        assert raw["Name"] == f"/{name}"
        assert raw["State"]["Running"] is True
        assert raw["Config"]["Labels"]["role"] == "main"

    async def test_starting_a_running_container_is_not_an_error(self, harness: Harness) -> None:
        container = await harness.run(SLEEPER)
        await harness.runtime.start(container)
        assert (await harness.runtime.inspect(container)).running

    async def test_a_taken_name_is_a_conflict(self, harness: Harness) -> None:
        name = harness.name()
        await harness.runtime.create(harness.body(SLEEPER), name=name)
        with pytest.raises(NameConflict) as caught:
            await harness.runtime.create(harness.body(SLEEPER), name=name)
        assert caught.value.name == name
        assert caught.value.status == 409

    async def test_an_invalid_name_is_refused(self, harness: Harness) -> None:
        with pytest.raises(RuntimeFailure) as caught:
            await harness.runtime.create(harness.body(SLEEPER), name="-not valid")
        assert caught.value.status == 400

    async def test_creating_from_a_missing_image(self, harness: Harness) -> None:
        body = {**harness.body(SLEEPER), "Image": MISSING_IMAGE}
        with pytest.raises(NoSuchImage) as caught:
            await harness.runtime.create(body)
        assert caught.value.image == MISSING_IMAGE

    async def test_stop_a_running_container(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await harness.run(SLEEPER)
        assert await runtime.stop(container, timeout=10) is True
        assert await runtime.wait(container) == 143
        assert (await runtime.inspect(container)).status == "exited"
        assert await runtime.stop(container, timeout=10) is False

    async def test_stop_a_container_never_started(self, harness: Harness) -> None:
        container = await harness.runtime.create(harness.body(SLEEPER))
        assert await harness.runtime.stop(container) is False

    async def test_stop_kills_a_container_that_ignores_its_stop_signal(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await harness.run(IGNORES_TERM)
        await harness.wait_for_line(container, "ready")
        stopped: list[bool] = []

        async def stop() -> None:
            stopped.append(await runtime.stop(container, timeout=1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop)
            await harness.advance(1)
        assert stopped == [True]
        assert (await runtime.inspect(container)).exit_code == 137

    @pytest.mark.parametrize(("signal", "status"), [("SIGHUP", 129), ("INT", 130), ("15", 143), ("SIGKILL", 137)])
    async def test_kill_with_a_signal(self, harness: Harness, signal: str, status: int) -> None:
        container = await harness.run(SLEEPER)
        await harness.runtime.kill(container, signal)
        assert await harness.runtime.wait(container) == status

    async def test_kill_a_stopped_container_is_a_conflict(self, harness: Harness) -> None:
        container = await harness.runtime.create(harness.body(SLEEPER))
        with pytest.raises(RuntimeFailure) as caught:
            await harness.runtime.kill(container, "SIGTERM")
        assert caught.value.status == 409

    async def test_kill_with_an_unknown_signal(self, harness: Harness) -> None:
        container = await harness.run(SLEEPER)
        with pytest.raises(RuntimeFailure) as caught:
            await harness.runtime.kill(container, "SIGNOTASIGNAL")
        assert caught.value.status == 400
        assert (await harness.runtime.inspect(container)).running

    async def test_remove(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await harness.run(SLEEPER)
        with pytest.raises(RuntimeFailure) as caught:
            await runtime.remove(container)
        assert caught.value.status == 409
        await runtime.remove(container, force=True, volumes=True)
        with pytest.raises(NoSuchContainer) as missing:
            await runtime.inspect(container)
        assert missing.value.container == container
        with pytest.raises(NoSuchContainer):
            await runtime.remove(container)

    async def test_remove_a_stopped_container(self, harness: Harness) -> None:
        container = await harness.run(EXIT_3)
        await harness.runtime.wait(container)
        await harness.runtime.remove(container)
        assert await harness.runtime.list(harness.labels) == []

    @pytest.mark.parametrize("operation", ["start", "wait", "stop", "kill", "inspect", "inspect_raw", "follow_logs"])
    async def test_a_missing_container(self, harness: Harness, operation: str) -> None:
        missing = f"fleetlet-test-missing-{_unique()}"
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "start": lambda: harness.runtime.start(missing),
            "wait": lambda: harness.runtime.wait(missing),
            "stop": lambda: harness.runtime.stop(missing),
            "kill": lambda: harness.runtime.kill(missing),
            "inspect": lambda: harness.runtime.inspect(missing),
            "inspect_raw": lambda: harness.runtime.inspect_raw(missing),
            "follow_logs": lambda: harness.runtime.follow_logs(missing, lambda line: None),
        }
        with pytest.raises(NoSuchContainer) as caught:
            await calls[operation]()
        assert caught.value.container == missing
        assert caught.value.status == 404

    async def test_list_by_labels(self, harness: Harness) -> None:
        runtime = harness.runtime
        main = await harness.run(SLEEPER, role="main")
        command = await runtime.create(harness.body(EXIT_3, labels={"role": "command"}))
        listed = await runtime.list({**harness.labels, "role": "main"})
        assert [(state.id, state.running) for state in listed] == [(main, True)]
        everything = {state.id: state for state in await runtime.list(harness.labels)}
        assert set(everything) == {main, command}
        assert everything[command].status == "created"
        assert everything[command].labels["role"] == "command"
        assert await runtime.list({**harness.labels, "role": "nobody"}) == []

    async def test_image_present(self, harness: Harness) -> None:
        assert await harness.runtime.image_present(IMAGE) is True
        assert await harness.runtime.image_present(f"{IMAGE}:latest") is True
        assert await harness.runtime.image_present(MISSING_IMAGE) is False

    async def test_pull(self, harness: Harness) -> None:
        lines: list[str] = []
        await harness.runtime.pull(IMAGE, "latest", lines.append)
        assert lines[0] == "latest: Pulling from library/busybox"
        assert any(line.startswith("Digest: sha256:") for line in lines)
        assert lines[-1] in {
            "Status: Image is up to date for busybox:latest",
            "Status: Downloaded newer image for busybox:latest",
        }
        assert await harness.runtime.image_present(IMAGE)

    async def test_pull_a_missing_image(self, harness: Harness) -> None:
        with pytest.raises(NoSuchImage) as caught:
            await harness.runtime.pull("fleetlet-test-missing-image", "nope", lambda line: None)
        assert caught.value.image == MISSING_IMAGE
        assert await harness.runtime.image_present(MISSING_IMAGE) is False

    async def test_logs_of_a_finished_container(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await harness.run(PRINTER)
        assert await runtime.wait(container) == 0
        for follow in (True, False):
            lines: list[LogLine] = []
            with anyio.fail_after(PROMPTLY):
                await runtime.follow_logs(container, lines.append, follow=follow)
            assert _by_stream(lines) == {"stdout": ["out 1", "out 2"], "stderr": ["err 1", "err 2"]}

    async def test_logs_of_a_container_with_a_terminal(self, harness: Harness) -> None:
        container = await harness.runtime.create(harness.body(PRINTER, Tty=True))
        await harness.runtime.start(container)
        await harness.runtime.wait(container)
        lines: list[LogLine] = []
        await harness.runtime.follow_logs(container, lines.append)
        assert lines == [LogLine("stdout", text) for text in ("out 1", "err 1", "out 2", "err 2")]

    async def test_follow_logs_until_the_container_stops(self, harness: Harness) -> None:
        lines: list[LogLine] = []
        container = await harness.run(TALKER)
        with anyio.fail_after(PROMPTLY):
            await harness.runtime.follow_logs(container, lines.append)
        assert [line.text for line in lines] == ["one", "two", "three"]
        assert (await harness.runtime.inspect(container)).exit_code == 5

    async def test_logs_since(self, harness: Harness) -> None:
        container = await harness.run(PRINTER)
        await harness.runtime.wait(container)
        lines: list[LogLine] = []
        await harness.runtime.follow_logs(container, lines.append, since=harness.now() + 3600, follow=False)
        assert lines == []

    async def test_exec(self, harness: Harness) -> None:
        container = await harness.run(SLEEPER)
        lines: list[LogLine] = []
        assert await harness.runtime.exec(container, ["sh", "-c", EXEC_SCRIPT], lines.append) == 4
        assert _by_stream(lines) == {"stdout": ["to stdout"], "stderr": ["to stderr"]}

    async def test_exec_with_environment_user_and_directory(self, harness: Harness) -> None:
        container = await harness.run(SLEEPER)
        lines: list[LogLine] = []
        argv = ["sh", "-c", ENV_SCRIPT]
        status = await harness.runtime.exec(
            container, argv, lines.append, env=["GREETING=hello"], user="65534", workdir="/tmp"
        )
        assert status == 0
        assert lines == [LogLine("stdout", "hello from /tmp as 65534")]

    async def test_exec_in_a_stopped_container_is_a_conflict(self, harness: Harness) -> None:
        container = await harness.runtime.create(harness.body(SLEEPER))
        with pytest.raises(RuntimeFailure) as caught:
            await harness.runtime.exec(container, ["true"], lambda line: None)
        assert caught.value.status == 409

    async def test_exec_in_a_missing_container(self, harness: Harness) -> None:
        with pytest.raises(NoSuchContainer):
            await harness.runtime.exec(f"fleetlet-test-missing-{_unique()}", ["true"], lambda line: None)

    async def test_events(self, harness: Harness) -> None:
        runtime = harness.runtime
        mine = harness.labels["fleetlet.test.id"]
        events: list[ContainerEvent] = []
        died = anyio.Event()

        def sink(event: ContainerEvent) -> None:
            if event.labels.get("fleetlet.test.id") == mine:
                events.append(event)
                if event.action == "die":
                    died.set()

        since = harness.now()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: runtime.watch_events(sink, since=since))
            container = await harness.run(EXIT_3, role="main")
            with anyio.fail_after(PROMPTLY):
                await died.wait()
            tg.cancel_scope.cancel()
        actions = [event.action for event in events]
        assert actions[:3] == ["create", "start", "die"]
        assert {event.container_id for event in events} == {container}
        die = events[2]
        assert die.exit_code == 3
        assert die.labels == {**harness.labels, "role": "main"}
        assert events[1].exit_code is None
        assert since <= events[0].time <= die.time

    async def test_events_of_a_stop(self, harness: Harness) -> None:
        runtime = harness.runtime
        container = await harness.run(SLEEPER)
        events: list[ContainerEvent] = []
        stopped = anyio.Event()

        def sink(event: ContainerEvent) -> None:
            if event.container_id == container:
                events.append(event)
                if event.action == "stop":
                    stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: runtime.watch_events(sink, since=harness.now() - 1))
            await runtime.stop(container)
            with anyio.fail_after(PROMPTLY):
                await stopped.wait()
            tg.cancel_scope.cancel()
        assert [event.action for event in events][-3:] == ["kill", "die", "stop"]
        assert events[-2].exit_code == 143

    @pytest.mark.parametrize("operation", ["wait", "follow_logs", "watch_events"])
    async def test_a_cancelled_call_leaves_the_runtime_usable(self, harness: Harness, operation: str) -> None:
        runtime = harness.runtime
        container = await harness.run(SLEEPER)
        calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "wait": lambda: runtime.wait(container),
            "follow_logs": lambda: runtime.follow_logs(container, lambda line: None),
            "watch_events": lambda: runtime.watch_events(lambda event: None),
        }
        with anyio.fail_after(PROMPTLY):
            async with anyio.create_task_group() as tg:
                tg.start_soon(calls[operation])
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        await runtime.ping()
        assert (await runtime.inspect(container)).running
