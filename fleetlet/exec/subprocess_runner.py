"""Exec lines that are not docker commands (``/bin/sh -c ...``, ``/usr/bin/etcdctl ...``), run as subprocesses.

:class:`SubprocessRunner` runs real processes; :class:`FakeProcessRunner` beside it plays scripted ones in memory.
Both hand out a process only inside ``async with runner.spawn(...)``: leaving the block kills whatever still runs,
so a cancelled actor never leaves an orphan behind.

Each process leads a process group of its own, and signals go to the whole group, as systemd's default
``KillMode=control-group`` sends them to the whole cgroup. A process that moves itself to another group or session
escapes this (there are no cgroups here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal as signals
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence, Set
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import ByteReceiveStream, Process

from fleetlet.clock import Clock
from fleetlet.errors import FleetletError
from fleetlet.exec.runtime import LogLine, LogSink, Stream
from fleetlet.exec.status import EXIT_EXEC, ExitStatus

MAX_LINE_BYTES = 48 * 1024  # longer output lines are split, as journald's LineMax= does
EXITED_SUCCESS = ExitStatus(code=0)
EXEC_FAILED = ExitStatus(code=EXIT_EXEC)
_log = logging.getLogger(__name__)


class SpawnFailed(FleetletError):
    """A command could not be started at all. ``exit_status`` is what systemd reports then: ``203/EXEC``."""

    def __init__(self, argv: Sequence[str], reason: str, exit_status: ExitStatus = EXEC_FAILED) -> None:
        self.argv = tuple(argv)
        self.reason = reason
        self.exit_status = exit_status
        program = argv[0] if argv else "''"
        super().__init__(f"Failed to execute {program}: {reason}")


class SpawnedProcess(Protocol):
    """A running (or ended) process, valid inside its ``spawn`` block."""

    @property
    def pid(self) -> int: ...

    @property
    def exit_status(self) -> ExitStatus | None:
        """How it ended; None while it runs."""

    async def wait(self) -> ExitStatus:
        """Until it ends and its output has been delivered; may be called again, also after a cancelled call."""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process and its group; nothing happens once it has ended."""


class ProcessRunner(Protocol):
    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], sink: LogSink, argv0: str | None = None
    ) -> AbstractAsyncContextManager[SpawnedProcess]:
        """Start ``argv`` with exactly ``env``, delivering its output lines to ``sink``.

        ``argv0`` is what the process sees as its argv[0] (systemd's ``@`` prefix); ``argv[0]`` stays the program
        run. Raises :class:`SpawnFailed` when it cannot start. Leaving the block kills what still runs (SIGKILL).
        """


def exit_status_from_returncode(returncode: int) -> ExitStatus:
    """Python's convention (negative: killed by that signal) as an ExitStatus."""
    return ExitStatus(signal=-returncode) if returncode < 0 else ExitStatus(code=returncode)


class LineSplitter:
    """Cuts a byte stream into text lines: invalid UTF-8 replaced, over-long lines split at a character boundary."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        if max_bytes < 4:
            raise ValueError("a line must hold at least one character of any width")
        self._max = max_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        lines: list[str] = []
        start = 0
        while (end := self._pending.find(b"\n", start)) >= 0:
            lines += self._chop(self._pending[start:end])
            start = end + 1
        del self._pending[:start]
        while len(self._pending) > self._max:
            cut = self._cut_point(self._pending)
            lines.append(self._pending[:cut].decode("utf-8", "replace"))
            del self._pending[:cut]
        return lines

    def flush(self) -> str | None:
        """The unterminated last line, if any (at end of stream)."""
        if not self._pending:
            return None
        text = self._pending.decode("utf-8", "replace")
        self._pending.clear()
        return text

    def _chop(self, line: bytearray) -> list[str]:
        pieces: list[str] = []
        while len(line) > self._max:
            cut = self._cut_point(line)
            pieces.append(line[:cut].decode("utf-8", "replace"))
            line = line[cut:]
        pieces.append(line.decode("utf-8", "replace"))
        return pieces

    def _cut_point(self, data: bytearray) -> int:
        # Step back over UTF-8 continuation bytes (10xxxxxx) so a character is not split in two.
        cut = self._max
        while cut > self._max - 3 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        return cut if data[cut] & 0xC0 != 0x80 else self._max


# ---------------------------------------------------------------------------------------------------------------
# The real runner


class _Subprocess:
    def __init__(self, process: Process, drain_timeout: float) -> None:
        self._process = process
        self._drain_timeout = drain_timeout
        self._stdout_done = anyio.Event()
        self._stderr_done = anyio.Event()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_status(self) -> ExitStatus | None:
        returncode = self._process.returncode
        return None if returncode is None else exit_status_from_returncode(returncode)

    async def wait(self) -> ExitStatus:
        returncode = await self._process.wait()
        # Let the readers deliver what it wrote before it ended, so its last words come before news of its end.
        # Bounded: a child it left behind may hold the pipes open indefinitely.
        with anyio.move_on_after(self._drain_timeout):
            await self._output_done()
        return exit_status_from_returncode(returncode)

    def signal(self, signum: int) -> None:
        if self._process.returncode is None:
            self._signal_group(signum)

    def _signal_group(self, signum: int) -> None:
        # Once the leader is reaped its pid could in principle be reused; the kernel does not hand out a pid that
        # is still some group's id, so this only misfires if the group emptied and the pid wrapped around meanwhile.
        try:
            os.killpg(self._process.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # every member changed its credentials (setuid): at least try the leader
            if self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._process.pid, signum)

    async def _output_done(self) -> None:
        await self._stdout_done.wait()
        await self._stderr_done.wait()

    async def pump(self, stream: ByteReceiveStream | None, name: Stream, sink: LogSink) -> None:
        done = self._stdout_done if name == "stdout" else self._stderr_done
        splitter = LineSplitter()
        try:
            while stream is not None:
                try:
                    chunk = await stream.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                for text in splitter.feed(chunk):
                    sink(LogLine(name, text))
        finally:
            if (rest := splitter.flush()) is not None:
                sink(LogLine(name, rest))
            done.set()

    async def stop(self, kill_timeout: float) -> None:
        """Kill what is left of it and reap it, within ``kill_timeout``. Call shielded."""
        self._signal_group(signals.SIGKILL)  # also what the leader left behind, even if it ended by itself
        with anyio.move_on_after(kill_timeout) as waiting:
            await self._process.wait()
            await self._output_done()
        if waiting.cancelled_caught:
            # Stuck in the kernel, or something it started left its group and holds the output pipes open.
            _log.warning("process %d or its output did not end within %gs of SIGKILL", self.pid, kill_timeout)


class SubprocessRunner:
    """Runs commands as child processes of the agent, each in a new session and process group.

    ``kill_timeout`` bounds the cleanup after SIGKILL (a process stuck in the kernel may take a while);
    ``drain_timeout`` bounds how long :meth:`SpawnedProcess.wait` waits for output once the process has ended.
    """

    def __init__(self, *, kill_timeout: float = 5.0, drain_timeout: float = 1.0) -> None:
        self._kill_timeout = kill_timeout
        self._drain_timeout = drain_timeout

    @asynccontextmanager
    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], sink: LogSink, argv0: str | None = None
    ) -> AsyncIterator[SpawnedProcess]:
        process = await _open_process(argv, env, argv0)
        handle = _Subprocess(process, self._drain_timeout)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle.pump, process.stdout, "stdout", sink)
                tg.start_soon(handle.pump, process.stderr, "stderr", sink)
                try:
                    yield handle
                finally:
                    with anyio.CancelScope(shield=True):
                        await handle.stop(self._kill_timeout)
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._kill_timeout):
                await process.aclose()


async def _open_process(argv: Sequence[str], env: Mapping[str, str], argv0: str | None) -> Process:
    if not argv:
        raise SpawnFailed(argv, "empty command line")
    try:
        if argv0 is None or argv0 == argv[0]:
            return await anyio.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                start_new_session=True,
            )
        return await _open_process_as(argv, env, argv0)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument or the environment
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpawnFailed(argv, reason) from exc


async def _open_process_as(argv: Sequence[str], env: Mapping[str, str], argv0: str) -> Process:
    """Run ``argv[0]`` with ``argv0`` as the name it sees, through Popen's ``executable=``.

    anyio.open_process does not take ``executable=``, but its backends pass unknown options on to Popen; reaching
    the backend means importing from anyio's private modules, so only this rare path depends on that.
    """
    try:
        from anyio._core._eventloop import get_async_backend
    except ImportError as exc:  # anyio reorganised: say so instead of running the command under the wrong name
        raise SpawnFailed(argv, "this version of anyio cannot set argv[0] (the '@' prefix)") from exc
    return await get_async_backend().open_process(
        [argv0, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
        executable=argv[0],
    )


# ---------------------------------------------------------------------------------------------------------------
# The fake runner

# Signals whose default action is to do nothing; SIGSTOP and friends stop rather than end a process.
_HARMLESS_SIGNALS = frozenset(
    {
        signals.SIGCHLD,
        signals.SIGCONT,
        signals.SIGURG,
        signals.SIGWINCH,
        signals.SIGSTOP,
        signals.SIGTSTP,
        signals.SIGTTIN,
        signals.SIGTTOU,
    }
)


@dataclass(frozen=True, slots=True)
class FakeBehaviour:
    """How a scripted process behaves.

    It writes ``output`` (plain strings go to stdout) as soon as it starts, then ends with ``exit`` after
    ``after`` seconds on the runner's clock; with ``exit=None`` it runs until signalled or finished by the test.
    Signals in ``ignore_signals`` do nothing (SIGKILL cannot be ignored). ``spawn_error`` makes it fail to start
    with that reason, like a missing executable.
    """

    exit: ExitStatus | None = EXITED_SUCCESS
    output: Sequence[LogLine | str] = ()
    ignore_signals: Set[int] = frozenset()
    after: float = 0.0
    spawn_error: str | None = None


FakeScript: TypeAlias = Callable[[tuple[str, ...]], FakeBehaviour | None]


class FakeProcess:
    """A scripted process. Tests read ``signals`` and ``env``, and drive it with :meth:`emit` and :meth:`finish`."""

    def __init__(
        self,
        pid: int,
        argv: Sequence[str],
        env: Mapping[str, str],
        argv0: str | None,
        behaviour: FakeBehaviour,
        sink: LogSink,
    ) -> None:
        self.pid = pid
        self.argv = tuple(argv)
        self.argv0 = argv0 if argv0 is not None else argv[0]
        self.env = dict(env)
        self.behaviour = behaviour
        self.signals: list[int] = []
        self._sink = sink
        self._status: ExitStatus | None = None
        self._ended = anyio.Event()

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._status

    @property
    def running(self) -> bool:
        return self._status is None

    async def wait(self) -> ExitStatus:
        await self._ended.wait()
        assert self._status is not None
        return self._status

    def signal(self, signum: int) -> None:
        if not self.running:
            return
        self.signals.append(signum)
        if signum == signals.SIGKILL:
            self._end(ExitStatus(signal=signum))
        elif signum not in self.behaviour.ignore_signals and signum not in _HARMLESS_SIGNALS:
            self._end(ExitStatus(signal=signum))

    def emit(self, text: str, stream: Stream = "stdout") -> None:
        """Write one line of output, as the process would."""
        if not self.running:
            raise RuntimeError(f"process {self.pid} has ended and cannot write")
        self._sink(LogLine(stream, text))

    def finish(self, code: int = 0) -> None:
        """End it with exit ``code``."""
        if not self.running:
            raise RuntimeError(f"process {self.pid} has already ended ({self._status})")
        self._end(ExitStatus(code=code))

    def _end(self, status: ExitStatus) -> None:
        self._status = status
        self._ended.set()

    async def _end_after(self, clock: Clock, seconds: float, status: ExitStatus) -> None:
        await clock.sleep(seconds)
        if self.running:
            self._end(status)


class FakeProcessRunner:
    """Plays processes from a script, in memory and in virtual time.

    ``script`` maps a whole argv (a tuple) or just the program (a string) to its behaviour, or is a function of
    the argv; :meth:`behave` adds entries later. An argv found nowhere fails to start as a missing executable
    would, unless ``default`` says how it behaves. ``clock`` is needed only for behaviours with ``after``.
    """

    def __init__(
        self,
        script: Mapping[tuple[str, ...] | str, FakeBehaviour] | FakeScript | None = None,
        *,
        default: FakeBehaviour | None = None,
        clock: Clock | None = None,
        first_pid: int = 1000,
    ) -> None:
        self._table: dict[tuple[str, ...] | str, FakeBehaviour] = {}
        self._function: FakeScript | None = None
        if isinstance(script, Mapping):
            self._table.update(script)
        elif script is not None:
            self._function = script
        self._default = default
        self._clock = clock
        self._next_pid = first_pid
        self.spawned: list[FakeProcess] = []

    def behave(self, key: tuple[str, ...] | str, behaviour: FakeBehaviour) -> None:
        """Script ``key`` (an argv tuple, or a program for any arguments) from now on."""
        self._table[key] = behaviour

    @property
    def running(self) -> list[FakeProcess]:
        return [p for p in self.spawned if p.running]

    def behaviour_for(self, argv: tuple[str, ...]) -> FakeBehaviour | None:
        if argv in self._table:
            return self._table[argv]
        if self._function is not None and (found := self._function(argv)) is not None:
            return found
        return self._table.get(argv[0], self._default) if argv else None

    @asynccontextmanager
    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], sink: LogSink, argv0: str | None = None
    ) -> AsyncIterator[FakeProcess]:
        await anyio.lowlevel.checkpoint()
        key = tuple(argv)
        behaviour = self.behaviour_for(key)
        if behaviour is None:
            raise SpawnFailed(argv, "No such file or directory" if argv else "empty command line")
        if behaviour.spawn_error is not None:
            raise SpawnFailed(argv, behaviour.spawn_error)
        if behaviour.after > 0 and self._clock is None:
            raise ValueError("FakeBehaviour(after=...) needs FakeProcessRunner(clock=...)")
        process = FakeProcess(self._next_pid, key, env, argv0, behaviour, sink)
        self._next_pid += 1
        self.spawned.append(process)
        for line in behaviour.output:
            if isinstance(line, str):
                process.emit(line)
            else:
                process.emit(line.text, line.stream)
        async with anyio.create_task_group() as tg:
            if behaviour.exit is not None:
                if behaviour.after > 0:
                    assert self._clock is not None
                    tg.start_soon(process._end_after, self._clock, behaviour.after, behaviour.exit)
                else:
                    process._end(behaviour.exit)
            try:
                yield process
            finally:
                process.signal(signals.SIGKILL)  # leaving the block kills it, as the real runner does
                tg.cancel_scope.cancel()
