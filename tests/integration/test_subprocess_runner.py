"""SubprocessRunner with real processes: output, exit statuses, signals, cancellation, environment, argv[0].

Tests wait on what the processes print, never for fixed times; each is bounded by ``fail_after`` so a bug fails fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from fleetlet.exec.runtime import LogLine, Stream
from fleetlet.exec.status import ExitStatus
from fleetlet.exec.subprocess_runner import ProcessRunner, SpawnFailed, SubprocessRunner

pytestmark = pytest.mark.integration

ENV = {"PATH": "/usr/bin:/bin"}
LIMIT = 5  # seconds; every test finishes far sooner


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runner() -> SubprocessRunner:
    return SubprocessRunner()


def _children() -> list[int]:
    """This process's children, zombies included: a zombie child is one nobody reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_child_left_behind() -> Iterator[None]:
    before = set(_children())
    yield
    assert set(_children()) - before == set()


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and has not died (a zombie waiting for someone else to reap it counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


class Ends:
    """Awaits the end of processes that need not be our children, through pidfds: no polling."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def watch(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            self._fds.append(os.pidfd_open(pid))

    async def all_ended(self) -> None:
        with anyio.fail_after(LIMIT):
            for fd in self._fds:
                await anyio.wait_readable(fd)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


@pytest.fixture
def ends() -> Iterator[Ends]:
    if not hasattr(os, "pidfd_open"):
        pytest.skip("needs pidfd_open (Linux 5.3)")
    ends = Ends()
    yield ends
    ends.close()


class Output:
    """A sink that records lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self._changed = anyio.Event()

    def __call__(self, line: LogLine) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = anyio.Event()

    def texts(self, stream: Stream = "stdout") -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]

    async def wait_for(self, count: int, stream: Stream = "stdout") -> list[str]:
        """The first ``count`` lines on ``stream``, once they have arrived."""
        while len(self.texts(stream)) < count:
            await self._changed.wait()
        return self.texts(stream)[:count]


def test_real_runner_satisfies_the_port() -> None:
    runner: ProcessRunner = SubprocessRunner()
    assert runner is not None


@pytest.mark.anyio
async def test_output_on_both_streams_and_the_exit_code(runner: SubprocessRunner) -> None:
    out = Output()
    script = "echo out1; echo err1 >&2; echo out2; printf 'bad \\377 byte\\n' >&2; printf partial; exit 3"
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", script], env=ENV, sink=out) as process:
            assert process.pid > 0
            status = await process.wait()
            # wait() returns once the output is in, not merely once the process is gone
            assert out.texts("stdout") == ["out1", "out2", "partial"]
            assert out.texts("stderr") == ["err1", "bad \ufffd byte"]
    assert status == ExitStatus(code=3)
    assert process.exit_status == status


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("script", "described"),
    [
        ("exit 0", "code=exited, status=0/SUCCESS"),
        ("exit 1", "code=exited, status=1/FAILURE"),
        ("exit 2", "code=exited, status=2/INVALIDARGUMENT"),
        ("kill -TERM $$", "code=killed, status=15/TERM"),
        ("kill -KILL $$", "code=killed, status=9/KILL"),
    ],
)
async def test_exit_statuses(runner: SubprocessRunner, script: str, described: str) -> None:
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", script], env=ENV, sink=Output()) as process:
            assert (await process.wait()).describe() == described


@pytest.mark.anyio
async def test_many_lines_arrive_complete_and_in_order(runner: SubprocessRunner) -> None:
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/usr/bin/seq", "1", "20000"], env=ENV, sink=out) as process:
            await process.wait()
    assert out.texts() == [str(i) for i in range(1, 20001)]


@pytest.mark.anyio
async def test_sigterm_ends_a_process_with_signal_15(runner: SubprocessRunner) -> None:
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", "echo ready; exec sleep 30"], env=ENV, sink=out) as process:
            await out.wait_for(1)
            process.signal(signal.SIGTERM)
            assert await process.wait() == ExitStatus(signal=signal.SIGTERM)
            process.signal(signal.SIGTERM)  # after the end: nothing happens


@pytest.mark.anyio
async def test_a_process_ignoring_sigterm_runs_until_sigkill(runner: SubprocessRunner) -> None:
    # SIGTERM is ignored, by the shell and (inherited) by its sleeps. SIGUSR1 makes the shell say it is alive:
    # had SIGTERM, sent first, been fatal, the shell would be dead before it could answer.
    script = 'trap "" TERM; trap "echo alive" USR1; echo ready; while :; do sleep 30 & wait; done'
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", script], env=ENV, sink=out) as process:
            await out.wait_for(1)
            process.signal(signal.SIGTERM)
            process.signal(signal.SIGUSR1)
            assert await out.wait_for(2) == ["ready", "alive"]
            assert process.exit_status is None
            process.signal(signal.SIGKILL)
            assert await process.wait() == ExitStatus(signal=signal.SIGKILL)


@pytest.mark.anyio
async def test_signals_reach_the_whole_process_group(runner: SubprocessRunner, ends: Ends) -> None:
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", "sleep 30 & echo $!; wait"], env=ENV, sink=out) as process:
            [child] = await out.wait_for(1)
            ends.watch(int(child))
            process.signal(signal.SIGTERM)
            assert await process.wait() == ExitStatus(signal=signal.SIGTERM)
            await ends.all_ended()  # the child got SIGTERM too; the runner's SIGKILL has not come yet
    assert not alive(int(child))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "script",
    [
        "echo $$; sleep 30 & echo $!; wait",  # the shell waits on a child that holds its output open
        'trap "" TERM; echo $$; sleep 30 >/dev/null 2>&1 & echo $!; exec sleep 30',  # the child lets go of it
    ],
)
async def test_cancelling_the_enclosing_scope_leaves_no_process_alive(
    runner: SubprocessRunner, ends: Ends, script: str
) -> None:
    out = Output()
    with anyio.fail_after(LIMIT), anyio.CancelScope() as scope:
        async with runner.spawn(["/bin/sh", "-c", script], env=ENV, sink=out) as process:
            pids = [int(pid) for pid in await out.wait_for(2)]
            for pid in pids:
                ends.watch(pid)
            scope.cancel()
            await process.wait()
    assert scope.cancelled_caught
    assert pids[0] == process.pid
    assert not alive(process.pid)  # reaped by the runner, so gone at once
    await ends.all_ended()  # the rest of its group was sent SIGKILL, which is delivered asynchronously
    assert [pid for pid in pids if alive(pid)] == []


@pytest.mark.anyio
async def test_leaving_the_block_ends_what_the_process_left_behind(runner: SubprocessRunner, ends: Ends) -> None:
    out = Output()
    script = "sleep 30 >/dev/null 2>&1 & echo $!"  # exits at once, leaving a child that does not hold the pipes
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", script], env=ENV, sink=out) as process:
            assert await process.wait() == ExitStatus(code=0)
            [child] = out.texts()
            assert alive(int(child))
            ends.watch(int(child))
        await ends.all_ended()
    assert not alive(int(child))


@pytest.mark.anyio
async def test_cancelled_while_starting_or_waiting_never_orphans(runner: SubprocessRunner) -> None:
    # Cancel at the spawn itself, and at a wait that would otherwise take 30 s.
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with runner.spawn(["/bin/sleep", "30"], env=ENV, sink=Output()):
            pytest.fail("should not get here")
    with anyio.CancelScope() as scope:
        async with runner.spawn(["/bin/sleep", "30"], env=ENV, sink=Output()) as process:
            scope.cancel()
            await process.wait()
    assert not alive(process.pid)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing", "No such file or directory"),
        (lambda tmp: tmp, "Permission denied"),  # a directory
        (lambda tmp: _write(tmp / "script", 0o644), "Permission denied"),  # not executable
        (lambda tmp: _write(tmp / "garbage", 0o755, b"\x7fELF garbage"), "Exec format error"),
    ],
)
async def test_a_command_that_cannot_run_fails_with_203(
    runner: SubprocessRunner, tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    program = str(make(tmp_path))
    for argv0 in (None, "renamed"):  # both ways of starting a process map the failure the same way
        with pytest.raises(SpawnFailed) as caught:
            async with runner.spawn([program, "arg"], env=ENV, sink=Output(), argv0=argv0):
                pytest.fail("should not get here")
        assert str(caught.value) == f"Failed to execute {program}: {reason}"
        assert caught.value.exit_status == ExitStatus(code=203)
        assert caught.value.argv == (program, "arg")


def _write(path: Path, mode: int, content: bytes = b"#!/bin/sh\necho hi\n") -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.anyio
@pytest.mark.parametrize(
    "env",
    [{}, {"A": "1", "B": "two words", "EMPTY": ""}, {"PATH": "/nowhere", "HOME": "/h"}],
)
async def test_the_environment_is_exactly_the_one_given(
    runner: SubprocessRunner, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLET_SHOULD_NOT_LEAK", "1")
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/usr/bin/env"], env=env, sink=out) as process:
            assert await process.wait() == ExitStatus(code=0)
    assert sorted(out.texts()) == sorted(f"{k}={v}" for k, v in env.items())


@pytest.mark.anyio
async def test_argv0_names_the_process_while_the_program_runs(runner: SubprocessRunner) -> None:
    out = Output()
    argv = ["/bin/sh", "-c", 'echo "$0"; cat /proc/$$/cmdline']
    with anyio.fail_after(LIMIT):
        async with runner.spawn(argv, env=ENV, sink=out, argv0="hello-world") as process:
            assert await process.wait() == ExitStatus(code=0)
    name, cmdline = out.texts()
    assert name == "hello-world"
    assert cmdline.split("\0")[:2] == ["hello-world", "-c"]


@pytest.mark.anyio
async def test_argv0_equal_to_the_program_changes_nothing(runner: SubprocessRunner) -> None:
    out = Output()
    with anyio.fail_after(LIMIT):
        async with runner.spawn(["/bin/sh", "-c", 'echo "$0"'], env=ENV, sink=out, argv0="/bin/sh") as process:
            await process.wait()
    assert out.texts() == ["/bin/sh"]
