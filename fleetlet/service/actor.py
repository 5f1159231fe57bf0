"""The unit actor: one task that owns one unit's lifecycle with systemd.service(5)'s semantics.

Start runs ``ExecStartPre`` in order, then ``ExecStart``, then ``ExecStartPost``, and the unit is running. A
failing pre command (without ``-``) skips the rest and ``ExecStop``, runs ``ExecStopPost`` and fails the unit.
When the main process ends on its own, ``ExecStop`` still runs, then ``ExecStopPost``. Stop runs ``ExecStop``,
then sends ``KillSignal`` and, after ``TimeoutStopSec``, SIGKILL, then ``ExecStopPost``. The first failure is
the result that sticks, and ``Restart=`` decides from it whether to go round again.

The actor is started with ``await tg.start(actor.run)`` and hands back its mailbox. Messages are frozen
dataclasses carrying their own reply. Closing the mailbox detaches the actor without stopping the unit: a
running container keeps running and is adopted by the next actor (an agent restart restarts nothing).
"""

from __future__ import annotations

import math
import signal as signals
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.clock import Clock, move_on_after
from fleetlet.exec.environment import expand_argv, read_environment_file
from fleetlet.exec.runtime import CLEANUP_SECONDS
from fleetlet.exec.status import ExitStatus
from fleetlet.service.journal import Journal
from fleetlet.service.ports import MainProcess, PreparedCommand, UnitRunner
from fleetlet.service.restart import StartLimit, restarts
from fleetlet.service.states import ACTIVE_OF, Result, SubState, UnitStatus
from fleetlet.units.check import CheckedUnit
from fleetlet.units.execline import ExecCommand
from fleetlet.units.service import ServiceConfig
from fleetlet.units.specifiers import MachineFacts, expand

T = TypeVar("T")

# How long to wait for the engine to confirm a SIGKILL took effect before giving up on the process.
_SIGKILL_GRACE = 10.0
_NO_MACHINE = MachineFacts()


class Reply(Generic[T]):
    """A one-shot answer carried inside a message."""

    __slots__ = ("_done", "_value")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: T | None = None

    def send(self, value: T) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    async def wait(self) -> T:
        await self._done.wait()
        assert self._value is not None
        return self._value


@dataclass(frozen=True, slots=True)
class Start:
    """Start the unit; the reply comes when the start job is over (running, exited, or failed)."""

    reply: Reply[UnitStatus] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the unit; the reply comes when it is inactive or failed. A stop never leads to a restart."""

    reply: Reply[UnitStatus] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class Restart:
    """Stop (if running), then start."""

    reply: Reply[UnitStatus] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class Reload:
    """Run ``ExecReload``; a failure fails the reload only, never the unit."""

    reply: Reply[UnitStatus] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True)
class GetStatus:
    reply: Reply[UnitStatus] = field(default_factory=Reply)


Message = Start | Stop | Restart | Reload | GetStatus
Mailbox = MemoryObjectSendStream[Message]


class _Interrupted(Exception):
    """A stop request cut a start phase short."""


class UnitActor:
    """Supervises one unit. Only the actor's own tasks touch its state."""

    # An agent holds one actor per unit, thousands on a big machine: slots keep each one small.
    __slots__ = (
        "_base_environment",
        "_clock",
        "_cycling",
        "_description",
        "_interruptible",
        "_journal",
        "_machine",
        "_mailbox_size",
        "_main",
        "_needs_docker",
        "_publish",
        "_reload_waiters",
        "_reloading",
        "_result",
        "_runner",
        "_start_limit",
        "_start_queued",
        "_start_waiters",
        "_status",
        "_stop_requested",
        "_stop_waiters",
        "_task_group",
        "config",
        "unit",
    )

    def __init__(
        self,
        unit: CheckedUnit,
        *,
        runner: UnitRunner,
        clock: Clock,
        journal: Journal,
        publish: Callable[[UnitStatus], None] = lambda status: None,
        machine: MachineFacts | None = None,
        base_environment: Mapping[str, str] | None = None,
        mailbox_size: int = 16,
    ) -> None:
        if unit.service is None:
            raise ValueError(f"{unit.name}: only .service units can run")
        self.unit = unit
        self.config: ServiceConfig = unit.service
        self._runner = runner
        self._clock = clock
        self._journal = journal
        self._publish = publish
        self._machine = machine or _NO_MACHINE
        self._base_environment = dict(base_environment or {"PATH": "/usr/local/bin:/usr/bin:/bin"})
        self._mailbox_size = mailbox_size
        self._description = _description(unit, self._machine)
        self._needs_docker = _orders_after_docker(unit)
        self._status = UnitStatus(name=unit.name.full, hash=unit.hash, since=clock.time())
        self._start_limit = StartLimit(self.config.start_limit_interval_sec, self.config.start_limit_burst)
        self._cycling = False  # a lifecycle task runs (starting, running, stopping or waiting to restart)
        self._interruptible: anyio.CancelScope | None = None  # the step of the lifecycle a stop may cut short
        self._reloading: anyio.CancelScope | None = None  # a reload in progress, which any stop cancels
        self._stop_requested = False
        self._start_queued = False  # a start asked for while the unit was on its way down
        self._start_waiters: list[Reply[UnitStatus]] = []
        self._stop_waiters: list[Reply[UnitStatus]] = []
        self._reload_waiters: list[Reply[UnitStatus]] = []
        self._result: Result = "success"
        self._main: MainProcess | None = None
        self._task_group: TaskGroup | None = None

    @property
    def status(self) -> UnitStatus:
        return self._status

    @property
    def name(self) -> str:
        return self.unit.name.full

    # --- the actor task -----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Mailbox] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until it is closed, then detach, leaving a running main container running."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            self._runner.attach(tg)
            adopted = await self._runner.adopt()
            if adopted is not None:
                self._adopt(adopted)
            send, receive = anyio.create_memory_object_stream[Message](self._mailbox_size)
            task_status.started(send)  # the caller owns the sending side from here, and closes it to detach us
            async with receive:
                async for message in receive:
                    self._handle(message)
                    del message  # an idle actor should not keep its last message (and its reply) alive
            tg.cancel_scope.cancel()
        # Detached: whoever still waits learns where the unit stood.
        for waiters in (self._start_waiters, self._stop_waiters, self._reload_waiters):
            self._answer(waiters)

    def _handle(self, message: Message) -> None:
        status = self._status
        match message:
            case GetStatus(reply):
                reply.send(status)
            case Start(reply):
                if not self._cycling:
                    self._begin()
                elif self._stop_requested or status.active == "deactivating":
                    self._start_queued = True  # systemd keeps the start job waiting until the stop is over
                elif status.active in ("active", "reloading"):
                    reply.send(status)
                    return
                self._start_waiters.append(reply)
            case Stop(reply):
                self._start_queued = False
                if not self._cycling:
                    reply.send(status)
                    return
                self._stop_waiters.append(reply)
                self._request_stop()
            case Restart(reply):
                if not self._cycling:
                    self._begin()
                else:
                    self._start_queued = True
                    self._request_stop()
                self._start_waiters.append(reply)
            case Reload(reply):
                if status.sub not in ("running", "exited") or self._reloading is not None:
                    reply.send(status)
                elif not self.config.exec_reload:
                    self._journal.write(f"{self.name}: Reload is not supported: the unit has no ExecReload=.")
                    reply.send(status)
                else:
                    assert self._task_group is not None
                    self._reload_waiters.append(reply)
                    self._task_group.start_soon(self._reload)

    def _begin(self, adopted: MainProcess | None = None) -> None:
        assert self._task_group is not None
        self._cycling = True
        self._stop_requested = False
        self._task_group.start_soon(self._run_lifecycle, adopted)

    def _reset_for_manual_start(self) -> None:
        # An explicit start clears the record of automatic ones, like `systemctl reset-failed` then start:
        # someone asked for it, so it is not the crash loop the start limit is there to stop.
        self._start_limit.reset()
        self._status = replace(self._status, restarts=0)

    def _request_stop(self) -> None:
        self._stop_requested = True
        for scope in (self._interruptible, self._reloading):
            if scope is not None:
                scope.cancel()

    def _adopt(self, main: MainProcess) -> None:
        """A main container already running with our hash: supervise it without restarting it."""
        self._main = main
        self._journal.write(f"{self.name}: Adopted running {main.description}.")
        self._set("running")
        self._begin(main)

    # --- the lifecycle ------------------------------------------------------------------------------------

    async def _run_lifecycle(self, adopted: MainProcess | None) -> None:
        try:
            await self._cycle(adopted)
        except Exception as e:  # nothing the engine does may take the agent down: the unit fails instead
            self._journal.write(f"{self.name}: Supervision failed: {e!r}")
            self._start_queued = False
            self._fail("resources")
            if self._main is not None:
                await self._release(self._main)
                self._main = None
            self._finish()
        finally:
            self._cycling = False
            self._interruptible = None
        self._answer(self._stop_waiters)
        self._answer(self._start_waiters)  # none should be left; if one is, it must not wait for ever

    async def _cycle(self, adopted: MainProcess | None) -> None:
        """Start, run and stop, going round again as long as Restart= (or a queued start) says so."""
        main = adopted
        if main is None:
            self._reset_for_manual_start()
        while True:
            if main is None:
                if not self._start_limit.allow(self._clock.monotonic()):
                    self._journal.write(f"{self.name}: Start request repeated too quickly.")
                    self._result = "start-limit-hit"
                    self._finish()
                    self._journal.write(f"Failed to start {self._description}.")
                    return
                self._result = "success"
                main = await self._start()
            if main is not None or self._status.sub == "exited":
                await self._run_until_stopped(main)
            main = None
            ended_by_request = self._stop_requested
            self._finish()
            if not self._start_queued and restarts(
                self.config.restart, self._result, stopped_by_request=ended_by_request
            ):
                if await self._wait_to_restart():
                    continue
            if not self._start_queued:
                return
            # A start (or a restart) came while the unit was on its way down, or waiting to restart.
            self._start_queued = False
            self._stop_requested = False
            self._reset_for_manual_start()

    async def _start(self) -> MainProcess | None:
        """start-pre, start, start-post: the main process, or None when nothing is left running.

        Whatever went wrong, the stop phases have run by the time this returns None.
        """
        config = self.config
        self._journal.write(f"Starting {self._description}...")
        try:
            if self._needs_docker:
                self._set("start-pre")
                await self._step(self._runner.wait_for_engine())
            if not await self._control_commands("start-pre", config.exec_start_pre, config.timeout_start_sec):
                await self._stop(None, exec_stop=False)
                return None
            main = await self._start_main()
            if main is None and self._result != "success":
                await self._stop(None, exec_stop=False)
                return None
            self._main = main
            if not await self._control_commands("start-post", config.exec_start_post, config.timeout_start_sec):
                await self._stop(main, exec_stop=False)
                return None
        except _Interrupted:
            # A stop during start skips ExecStop, as systemd does: signal what runs, then ExecStopPost.
            await self._stop(self._main, exec_stop=False)
            return None
        if main is None and not (config.type == "oneshot" and config.remain_after_exit):
            # Nothing left running (a oneshot, or a command that exited at once): the service stops by itself.
            await self._stop(None, exec_stop=True)
            return None
        self._set("running" if main is not None else "exited")
        self._journal.write(f"Started {self._description}.")
        self._answer(self._start_waiters)
        return main

    async def _start_main(self) -> MainProcess | None:
        config = self.config
        if config.type == "oneshot":  # its ExecStart commands run to completion, like control commands
            await self._control_commands("start", config.exec_start, config.timeout_start_sec)
            return None
        self._set("start")
        forking = config.type == "forking"
        # Under systemd a simple service's main process is the docker CLI itself: pulling the image and creating
        # the container happen after the start, so no start timeout bounds them. Forking waits for its starter.
        limit = config.timeout_start_sec if forking else math.inf
        if not config.exec_start:  # a [Container] section
            outcome = await self._bounded_step(limit, "start", self._runner.start_container())
        else:
            command = self._prepare(config.exec_start[0])
            if command is None:
                self._fail("resources")
                return None
            outcome = await self._bounded_step(limit, "start", self._runner.start_main(command, forking=forking))
        if outcome is None:
            return None
        status, main = outcome
        if status is not None:
            if forking:  # the starter is a control process; its success hands over to the daemon it left
                self._record_control_exit(status, config.exec_start[0])
            else:  # the command ended at once: under systemd that was the main process ending
                self._main_exited(status)
        return main

    async def _run_until_stopped(self, main: MainProcess | None) -> None:
        """running (or exited): until the main process ends or a stop is asked for, then the stop phases."""
        if main is None:
            await self._unless_stopped(anyio.sleep_forever())
            await self._stop(None, exec_stop=True)
            return
        status = await self._unless_stopped(main.wait())
        if status is not None:
            self._main_exited(status, oom_killed=main.oom_killed)
            await self._stop(None, exec_stop=True, ended=main)
        else:
            await self._stop(main, exec_stop=True)

    async def _stop(self, main: MainProcess | None, *, exec_stop: bool, ended: MainProcess | None = None) -> None:
        """stop (ExecStop, unless the start never completed), stop-sigterm, stop-sigkill, stop-post."""
        config = self.config
        if self._reloading is not None:
            self._reloading.cancel()
        if self._stop_requested:
            self._journal.write(f"Stopping {self._description}...")
        if exec_stop:
            await self._control_commands("stop", config.exec_stop, config.timeout_stop_sec, interruptible=False)
        if main is not None and config.kill_mode != "none":
            await self._terminate(main)
        await self._control_commands("stop-post", config.exec_stop_post, config.timeout_stop_sec, interruptible=False)
        for finished in (main, ended):
            if finished is not None:
                await self._release(finished)
        self._main = None

    async def _terminate(self, main: MainProcess) -> None:
        """stop-sigterm, then stop-sigkill after TimeoutStopSec, unless the main process has already gone."""
        config = self.config
        self._set("stop-sigterm")
        await main.signal(config.kill_signal)
        status: ExitStatus | None = None
        async with move_on_after(self._clock, config.timeout_stop_sec) as deadline:
            status = await main.wait()
        if deadline.expired:
            self._journal.write(f"{self.name}: State 'stop-sigterm' timed out. Killing.")
            self._fail("timeout")
            self._set("stop-sigkill")
            await main.signal(signals.SIGKILL)
            async with move_on_after(self._clock, _SIGKILL_GRACE):
                status = await main.wait()
        if status is not None:
            self._main_exited(status, oom_killed=main.oom_killed)

    async def _release(self, main: MainProcess) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_SECONDS):
            try:
                await main.release()
            except Exception as e:  # cleanup must not turn a stop into a crash
                self._journal.write(f"{self.name}: Failed to clean up {main.description}: {e}")

    def _finish(self, *, quietly: bool = False) -> None:
        """Settle in failed or dead, as the result says; a start job still waiting is over (unless one is queued)."""
        self._set("failed" if self._result != "success" else "dead")
        if not self._start_queued:
            self._answer(self._start_waiters)
        if quietly:
            return
        if self._result != "success":
            self._journal.write(f"{self.name}: Failed with result '{self._result}'.")
        elif self._stop_requested:
            self._journal.write(f"Stopped {self._description}.")
        else:
            self._journal.write(f"{self.name}: Deactivated successfully.")

    async def _wait_to_restart(self) -> bool:
        """auto-restart: wait RestartSec unless a stop comes first. True when the restart should go ahead."""
        self._set("auto-restart")
        await self._unless_stopped(self._clock.sleep(self.config.restart_sec))
        if self._stop_requested:  # the failure was reported; a stop now ends in dead, as with systemd
            self._result = "success"
            self._finish(quietly=True)
            self._journal.write(f"Stopped {self._description}.")
            return False
        self._status = replace(self._status, restarts=self._status.restarts + 1)
        self._journal.write(f"{self.name}: Scheduled restart job, restart counter is at {self._status.restarts}.")
        return True

    async def _reload(self) -> None:
        """ExecReload: a failure fails the reload only, never the unit; any stop cancels it."""
        previous = self._status.sub
        ok = False
        with anyio.CancelScope() as self._reloading:
            self._journal.write(f"Reloading {self._description}...")
            ok = await self._control_commands(
                "reload", self.config.exec_reload, self.config.timeout_start_sec, interruptible=False, fails_unit=False
            )
        cancelled = self._reloading.cancelled_caught
        self._reloading = None
        if cancelled:
            self._journal.write(f"{self.name}: Reload cancelled by a stop.")
        else:
            if self._status.sub == "reload":
                self._set(previous)
            self._journal.write(f"Reloaded {self._description}." if ok else f"Reload failed for {self._description}.")
        self._answer(self._reload_waiters)

    # --- steps --------------------------------------------------------------------------------------------

    async def _control_commands(
        self,
        phase: SubState,
        commands: tuple[ExecCommand, ...],
        limit: float,
        *,
        interruptible: bool = True,
        fails_unit: bool = True,
    ) -> bool:
        """Run one phase's commands in order, each bounded by ``limit``; False when one fails without ``-``.

        A phase without commands is skipped without showing in the unit's state, as systemd skips it.
        """
        if not commands:
            return True
        self._set(phase)
        for command in commands:
            prepared = self._prepare(command)
            if prepared is None:
                if fails_unit:
                    self._fail("resources")
                return False
            if interruptible:
                status = await self._bounded_step(limit, phase, self._runner.run_control(prepared))
                if status is None:
                    return False
            else:
                async with move_on_after(self._clock, limit) as deadline:
                    status = await self._runner.run_control(prepared)
                if deadline.expired:
                    self._journal.write(f"{self.name}: {phase} operation timed out. Terminating.")
                    if fails_unit:
                        self._fail("timeout")
                    return False
            if not self._record_control_exit(status, command, fails_unit=fails_unit):
                return False
        return True

    async def _bounded_step(self, limit: float, phase: str, step: Coroutine[Any, Any, T]) -> T | None:
        """A start step bounded by ``limit`` seconds (None: timed out, result recorded); _Interrupted on a stop."""
        done, result = True, None
        async with move_on_after(self._clock, limit) as deadline:
            done, result = await self._unless_stopped_done(step)
        if not done:
            raise _Interrupted
        if deadline.expired:
            self._journal.write(f"{self.name}: {phase} operation timed out. Terminating.")
            self._fail("timeout")
            return None
        return result

    async def _step(self, step: Coroutine[Any, Any, T]) -> T:
        """A start step that a stop request cuts short by raising _Interrupted."""
        done, result = await self._unless_stopped_done(step)
        if not done:
            raise _Interrupted
        return result  # type: ignore[return-value]

    async def _unless_stopped(self, step: Coroutine[Any, Any, T]) -> T | None:
        """Await ``step`` unless a stop request comes first (then None)."""
        return (await self._unless_stopped_done(step))[1]

    async def _unless_stopped_done(self, step: Coroutine[Any, Any, T]) -> tuple[bool, T | None]:
        """``(True, result)`` when ``step`` finished; ``(False, None)`` when a stop request came first."""
        if self._stop_requested:
            step.close()
            return False, None
        result: T | None = None
        with anyio.CancelScope() as scope:
            self._interruptible = scope
            result = await step
        self._interruptible = None
        if scope.cancelled_caught:
            return False, None
        return True, result

    def _record_control_exit(self, status: ExitStatus, command: ExecCommand, *, fails_unit: bool = True) -> bool:
        """Judge a control command's end; True when the phase may go on."""
        if status.is_clean(*self.config.success_exit_status):
            return True
        self._journal.write(f"{self.name}: Control process exited, {status.describe()}")
        if command.ignore_failure:
            return True
        if fails_unit:
            self._fail("exit-code" if status.code is not None else "signal")
        return False

    def _main_exited(self, status: ExitStatus, *, oom_killed: bool = False) -> None:
        self._status = replace(self._status, exit_status=status.describe())
        self._journal.write(f"{self.name}: Main process exited, {status.describe()}")
        if oom_killed:  # systemd's default OOMPolicy=stop: the unit fails with its own result
            self._journal.write(f"{self.name}: A process of this unit has been killed by the OOM killer.")
            self._fail("oom-kill")
        if not status.is_clean(*self.config.success_exit_status, daemon=True):
            self._fail("exit-code" if status.code is not None else "signal")

    def _fail(self, result: Result) -> None:
        """The first failure is the result that sticks."""
        if self._result == "success":
            self._result = result

    def _prepare(self, command: ExecCommand) -> PreparedCommand | None:
        """Resolve specifiers, the environment (EnvironmentFile= re-read now) and ``$VAR``; None if that fails."""
        env = self._environment()
        if env is None:
            return None
        argv = [expand(word, self.unit.name, self._machine) for word in command.argv]
        if not command.no_env_expansion:
            argv = expand_argv(argv, env)
        argv0: str | None = None
        if command.argv0_override and len(argv) >= 2:
            argv0 = argv[1]
            argv = [argv[0], *argv[2:]]
        return PreparedCommand(tuple(argv), env, command.ignore_failure, argv0, command.raw)

    def _environment(self) -> dict[str, str] | None:
        """Environment= then each EnvironmentFile=; None when a file without ``-`` cannot be read (systemd then
        refuses to run the command, and so does fleetlet)."""
        env = dict(self._base_environment)
        for key, value in self.config.environment:
            env[key] = expand(value, self.unit.name, self._machine)
        for path, optional in self.config.environment_files:
            try:
                text = Path(expand(path, self.unit.name, self._machine)).read_text()
                env.update(read_environment_file(text))
            except (OSError, ValueError) as e:
                if not optional:
                    self._journal.write(f"{self.name}: Failed to load environment file {path}: {e}")
                    return None
        return env

    def _set(self, sub: SubState) -> None:
        active = ACTIVE_OF[sub]
        since = self._status.since if active == self._status.active else self._clock.time()
        main = self._main
        self._status = replace(
            self._status,
            active=active,
            sub=sub,
            result=self._result,
            since=since,
            container_id=main.container_id if main is not None else None,
            main_pid=main.pid if main is not None else None,
        )
        self._publish(self._status)

    def _answer(self, waiters: list[Reply[UnitStatus]]) -> None:
        for reply in waiters:
            reply.send(self._status)
        waiters.clear()


def _orders_after_docker(unit: CheckedUnit) -> bool:
    """``After=``/``Requires=docker.service``: under systemd the start waited for Docker; here, for the engine."""
    for setting in ("After", "Requires", "Wants", "BindsTo"):
        for entry in unit.file.list_entries("Unit", setting):
            if "docker.service" in entry.value.split():
                return True
    return False


def _description(unit: CheckedUnit, machine: MachineFacts) -> str:
    entry = unit.file.last("Unit", "Description")
    if entry is None or not entry.value:
        return unit.name.full
    return expand(entry.value, unit.name, machine)
