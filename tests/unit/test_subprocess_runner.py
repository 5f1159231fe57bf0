"""The scripted FakeProcessRunner behaves like real processes; line splitting and exit statuses, without processes."""

from __future__ import annotations

import signal

import anyio
import anyio.lowlevel
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.runtime import LogLine
from fleetlet.exec.status import ExitStatus
from fleetlet.exec.subprocess_runner import (
    FakeBehaviour,
    FakeProcess,
    FakeProcessRunner,
    LineSplitter,
    ProcessRunner,
    SpawnFailed,
    exit_status_from_returncode,
)

SH = ("/bin/sh", "-c", "echo hi")
DAEMON = ("/usr/bin/etcdctl", "watch", "/x")
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def settle() -> None:
    """Let every task run until blocked; a few checkpoints first spare asyncio's 0.1 s polling in the common case."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def test_fake_satisfies_the_port() -> None:
    runner: ProcessRunner = FakeProcessRunner()
    assert runner is not None


# --- scripted runs -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("behaviour", "status", "lines"),
    [
        (FakeBehaviour(), ExitStatus(code=0), []),
        (FakeBehaviour(output=["hi"]), ExitStatus(code=0), [LogLine("stdout", "hi")]),
        (
            FakeBehaviour(exit=ExitStatus(code=1), output=["a", LogLine("stderr", "boom")]),
            ExitStatus(code=1),
            [LogLine("stdout", "a"), LogLine("stderr", "boom")],
        ),
        (FakeBehaviour(exit=ExitStatus(signal=signal.SIGSEGV)), ExitStatus(signal=signal.SIGSEGV), []),
    ],
)
async def test_scripted_process_writes_and_ends(
    behaviour: FakeBehaviour, status: ExitStatus, lines: list[LogLine]
) -> None:
    runner = FakeProcessRunner({SH: behaviour})
    got: list[LogLine] = []
    async with runner.spawn(SH, env=ENV, sink=got.append) as process:
        assert await process.wait() == status
        assert process.exit_status == status
    assert got == lines


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("ignore", "sent", "status"),
    [
        (frozenset(), [signal.SIGTERM], ExitStatus(signal=15)),
        (frozenset(), [signal.SIGHUP], ExitStatus(signal=1)),
        (frozenset(), [signal.SIGKILL], ExitStatus(signal=9)),
        (frozenset(), [signal.SIGCHLD, signal.SIGCONT, signal.SIGWINCH], None),  # ignored by default
        ({signal.SIGTERM}, [signal.SIGTERM], None),
        ({signal.SIGTERM}, [signal.SIGTERM, signal.SIGKILL], ExitStatus(signal=9)),
        ({signal.SIGKILL}, [signal.SIGKILL], ExitStatus(signal=9)),  # SIGKILL cannot be ignored
        ({signal.SIGTERM}, [signal.SIGTERM, signal.SIGINT], ExitStatus(signal=2)),
    ],
)
async def test_signals_act_as_on_real_processes(ignore: set[int], sent: list[int], status: ExitStatus | None) -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None, ignore_signals=ignore)})
    async with runner.spawn(DAEMON, env=ENV, sink=lambda line: None) as process:
        for signum in sent:
            process.signal(signum)
        assert process.exit_status == status
        if status is not None:
            assert await process.wait() == status


@pytest.mark.anyio
async def test_signals_after_the_end_change_nothing() -> None:
    runner = FakeProcessRunner({SH: FakeBehaviour(exit=ExitStatus(code=3))})
    async with runner.spawn(SH, env=ENV, sink=lambda line: None) as process:
        process.signal(signal.SIGKILL)
        assert await process.wait() == ExitStatus(code=3)
        assert process.signals == []


@pytest.mark.anyio
async def test_test_drives_output_and_end() -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None)})
    got: list[LogLine] = []
    async with runner.spawn(DAEMON, env=ENV, sink=got.append) as process, anyio.create_task_group() as tg:
        ended: list[ExitStatus] = []

        async def waiter() -> None:
            ended.append(await process.wait())

        tg.start_soon(waiter)
        await settle()
        assert ended == []
        assert runner.running == [process]
        process.emit("working")
        process.emit("careful", "stderr")
        process.finish(4)
        await settle()
        assert ended == [ExitStatus(code=4)]
        with pytest.raises(RuntimeError, match="already ended"):
            process.finish(0)
        with pytest.raises(RuntimeError, match="cannot write"):
            process.emit("too late")
    assert got == [LogLine("stdout", "working"), LogLine("stderr", "careful")]
    assert runner.running == []


@pytest.mark.anyio
async def test_wait_can_be_called_again_after_a_cancelled_call() -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None)})
    async with runner.spawn(DAEMON, env=ENV, sink=lambda line: None) as process:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await process.wait()
        process.finish(0)
        assert await process.wait() == ExitStatus(code=0)


@pytest.mark.anyio
async def test_leaving_the_block_kills_a_running_process() -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None, ignore_signals={signal.SIGTERM})})
    async with runner.spawn(DAEMON, env=ENV, sink=lambda line: None) as process:
        process.signal(signal.SIGTERM)
    assert process.exit_status == ExitStatus(signal=9)
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]
    assert runner.running == []


@pytest.mark.anyio
async def test_cancelling_the_enclosing_scope_kills_the_process() -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None)})
    with anyio.CancelScope() as scope:
        async with runner.spawn(DAEMON, env=ENV, sink=lambda line: None) as process:
            scope.cancel()
            await process.wait()
    assert process.exit_status == ExitStatus(signal=9)
    assert runner.running == []


@pytest.mark.anyio
async def test_cancelled_before_spawning_starts_nothing() -> None:
    runner = FakeProcessRunner({DAEMON: FakeBehaviour(exit=None)})
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with runner.spawn(DAEMON, env=ENV, sink=lambda line: None):
            pytest.fail("should not get here")
    assert runner.spawned == []


@pytest.mark.anyio
async def test_a_process_ends_after_virtual_time() -> None:
    clock = ManualClock()
    runner = FakeProcessRunner({SH: FakeBehaviour(exit=ExitStatus(code=0), after=30)}, clock=clock)
    async with runner.spawn(SH, env=ENV, sink=lambda line: None) as process:
        await settle()
        clock.advance(29.9)
        await settle()
        assert process.exit_status is None
        assert await clock.advance_to_next() == 30
        assert process.exit_status == ExitStatus(code=0)


@pytest.mark.anyio
async def test_after_without_a_clock_is_a_test_mistake() -> None:
    runner = FakeProcessRunner({SH: FakeBehaviour(after=1)})
    with pytest.raises(ValueError, match="clock"):
        async with runner.spawn(SH, env=ENV, sink=lambda line: None):
            pass


# --- what is run -------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_records_argv_env_and_argv0() -> None:
    runner = FakeProcessRunner({SH: FakeBehaviour()})
    async with runner.spawn(list(SH), env={"A": "1"}, sink=lambda line: None, argv0="hello") as first:
        pass
    async with runner.spawn(SH, env={}, sink=lambda line: None) as second:
        pass
    assert (first.argv, first.env, first.argv0) == (SH, {"A": "1"}, "hello")
    assert (second.env, second.argv0) == ({}, "/bin/sh")
    assert second.pid == first.pid + 1
    assert runner.spawned == [first, second]


def _lookup(runner: FakeProcessRunner, argv: tuple[str, ...]) -> FakeBehaviour | None:
    return runner.behaviour_for(argv)


EXACT = FakeBehaviour(output=["exact"])
PROGRAM = FakeBehaviour(output=["program"])
COMPUTED = FakeBehaviour(output=["computed"])
DEFAULT = FakeBehaviour(output=["default"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("/bin/sh", "-c", "echo hi"), EXACT),  # a whole argv wins
        (("/bin/sh", "-c", "other"), PROGRAM),  # then the program, with any arguments
        (("/usr/bin/computed", "x"), COMPUTED),  # then the script function
        (("/usr/bin/unknown",), DEFAULT),  # then the default
    ],
)
def test_script_lookup_order(argv: tuple[str, ...], expected: FakeBehaviour) -> None:
    runner = FakeProcessRunner(lambda argv: COMPUTED if argv[0] == "/usr/bin/computed" else None, default=DEFAULT)
    runner.behave(SH, EXACT)
    runner.behave("/bin/sh", PROGRAM)
    assert _lookup(runner, argv) is expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ({}, ["/usr/bin/missing"], "Failed to execute /usr/bin/missing: No such file or directory"),
        ({"/bin/x": FakeBehaviour(spawn_error="Permission denied")}, ["/bin/x"], "/bin/x: Permission denied"),
        ({}, [], "empty command line"),
    ],
)
async def test_spawn_failures_carry_203(
    script: dict[tuple[str, ...] | str, FakeBehaviour], argv: list[str], message: str
) -> None:
    runner = FakeProcessRunner(script)
    with pytest.raises(SpawnFailed, match=message) as caught:
        async with runner.spawn(argv, env=ENV, sink=lambda line: None):
            pass
    assert caught.value.exit_status == ExitStatus(code=203)
    assert caught.value.exit_status.describe() == "code=exited, status=203/EXEC"
    assert runner.spawned == []


@pytest.mark.anyio
async def test_spawned_process_is_a_fake_process() -> None:
    runner = FakeProcessRunner(default=FakeBehaviour())
    async with runner.spawn(["/anything"], env={}, sink=lambda line: None) as process:
        assert isinstance(process, FakeProcess)


# --- exit statuses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "status", "described"),
    [
        (0, ExitStatus(code=0), "code=exited, status=0/SUCCESS"),
        (1, ExitStatus(code=1), "code=exited, status=1/FAILURE"),
        (203, ExitStatus(code=203), "code=exited, status=203/EXEC"),
        (-15, ExitStatus(signal=15), "code=killed, status=15/TERM"),
        (-9, ExitStatus(signal=9), "code=killed, status=9/KILL"),
    ],
)
def test_exit_status_from_returncode(returncode: int, status: ExitStatus, described: str) -> None:
    assert exit_status_from_returncode(returncode) == status
    assert status.describe() == described


# --- line splitting ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "lines", "rest"),
    [
        ([b"one\ntwo\n"], ["one", "two"], None),
        ([b"par", b"tial\nlast"], ["partial"], "last"),
        ([b"\n\n"], ["", ""], None),
        ([b"crlf\r\n"], ["crlf\r"], None),
        ([b"bad \xff byte\n"], ["bad \ufffd byte"], None),
        ([b"split \xc3", b"\xbc char\n"], ["split \u00fc char"], None),  # a character cut between two reads
        ([b"no newline at all"], [], "no newline at all"),
        ([], [], None),
    ],
)
def test_line_splitter(chunks: list[bytes], lines: list[str], rest: str | None) -> None:
    splitter = LineSplitter()
    got = [line for chunk in chunks for line in splitter.feed(chunk)]
    assert (got, splitter.flush()) == (lines, rest)
    assert splitter.flush() is None


@pytest.mark.parametrize(
    ("data", "lines", "rest"),
    [
        (b"abcdefghij\n", ["abcdefgh", "ij"], None),
        (b"abcdefghij", ["abcdefgh"], "ij"),
        ("abcdefg\u00fcz\n".encode(), ["abcdefg", "\u00fcz"], None),  # ü is two bytes: not cut in half
        ("ab\U0001f680\U0001f680\n".encode(), ["ab\U0001f680", "\U0001f680"], None),
    ],
)
def test_line_splitter_cuts_long_lines_at_character_boundaries(data: bytes, lines: list[str], rest: str | None) -> None:
    splitter = LineSplitter(max_bytes=8)
    assert (splitter.feed(data), splitter.flush()) == (lines, rest)
