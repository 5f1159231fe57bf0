"""The unit runner: one unit's commands carried out on this machine.

``docker ...`` commands become Engine API calls (:mod:`fleetlet.exec.docker_commands`); anything else runs as a
subprocess. The main process of a service is a container (``docker run`` in ``ExecStart=``, or a ``[Container]``
section) or a subprocess. A container outlives the agent and is adopted by the next one; a subprocess does not.

What follows a main process in the background (its output, a subprocess's life) runs in the actor's task group,
which the actor attaches: nothing the executor starts outlives the actor except the containers themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.clock import Clock
from fleetlet.exec.docker_argv import DockerArgvError, Run, RunSpec, is_docker, parse_docker_argv
from fleetlet.exec.docker_commands import (
    EXIT_DAEMON_ERROR,
    DockerCommandFailed,
    DockerContext,
    run_docker,
    start_container,
)
from fleetlet.exec.engine_events import ENGINE_RETRY_MAX, VANISHED, EngineEvents, until_engine_answers
from fleetlet.exec.runtime import (
    CLEANUP_SECONDS,
    LABEL_HASH,
    LABEL_MACHINE,
    LABEL_REMOVE,
    LABEL_ROLE,
    LABEL_UNIT,
    ContainerRuntime,
    EngineUnavailable,
    LogSink,
    NoSuchContainer,
    RuntimeFailure,
)
from fleetlet.exec.status import ExitStatus
from fleetlet.exec.subprocess_runner import ProcessRunner, SpawnedProcess, SpawnFailed
from fleetlet.service.journal import Journal, log_sink
from fleetlet.service.ports import MainProcess, PreparedCommand


class Executor:
    """Runs one unit's commands: implements :class:`~fleetlet.service.ports.UnitRunner`."""

    __slots__ = (
        "_clock",
        "_container",
        "_events",
        "_hash",
        "_journal",
        "_labels",
        "_processes",
        "_runtime",
        "_sink",
        "_tg",
        "_unit",
    )

    def __init__(
        self,
        *,
        unit: str,
        unit_hash: str,
        machine_id: str,
        runtime: ContainerRuntime,
        processes: ProcessRunner,
        journal: Journal,
        clock: Clock,
        container: RunSpec | None = None,
        events: EngineEvents | None = None,
    ) -> None:
        """``events``: the agent's one event subscription, for the deaths of main containers; without it, each main
        container holds a wait call of its own open for its whole life."""
        self._unit = unit
        self._hash = unit_hash
        self._labels = {LABEL_UNIT: unit, LABEL_HASH: unit_hash, LABEL_MACHINE: machine_id}
        self._runtime = runtime
        self._processes = processes
        self._journal = journal
        self._clock = clock
        self._container = container
        self._events = events
        self._sink: LogSink = log_sink(journal)
        self._tg: TaskGroup | None = None  # the actor's, for what follows a main process in the background

    def attach(self, task_group: TaskGroup) -> None:
        self._tg = task_group

    # --- UnitRunner -----------------------------------------------------------------------------------------

    async def run_control(self, command: PreparedCommand) -> ExitStatus:
        if is_docker(command.argv[0]):
            try:
                parsed = parse_docker_argv(command.argv)
            except DockerArgvError as e:
                self._journal.write(f"docker: {e}", "stderr")
                return ExitStatus.exited(EXIT_DAEMON_ERROR)
            return ExitStatus.exited(await run_docker(parsed, self._docker(command.env)))
        try:
            async with self._processes.spawn(
                command.argv, env=command.env, sink=self._sink, argv0=command.argv0
            ) as process:
                return await process.wait()
        except SpawnFailed as e:
            self._journal.write(f"{self._unit}: {e}")
            return e.exit_status

    async def start_main(
        self, command: PreparedCommand, *, forking: bool
    ) -> tuple[ExitStatus | None, MainProcess | None]:
        if not is_docker(command.argv[0]):
            if forking:  # the daemon it forks cannot be followed without cgroups; only the command's end is seen
                return await self.run_control(command), None
            return await self._start_process(command)
        try:
            parsed = parse_docker_argv(command.argv)
        except DockerArgvError as e:
            self._journal.write(f"docker: {e}", "stderr")
            return ExitStatus.exited(EXIT_DAEMON_ERROR), None
        if not isinstance(parsed, Run) or parsed.detach != forking:
            # Commands that end by themselves: `docker start foo`; `docker run -d` under Type=simple (the unit then
            # stops, as under systemd); a foreground `docker run` under Type=forking (which never "forks").
            return ExitStatus.exited(await run_docker(parsed, self._docker(command.env))), None
        ctx = self._docker(command.env)
        try:
            container = await start_container(parsed, ctx, role="main")
        except DockerCommandFailed as e:
            ctx.say(e.message, "stderr")
            return ExitStatus.exited(e.exit_code), None
        if forking:
            ctx.say(container)  # what `docker run -d` prints
        main = self._container_main(container, remove=parsed.remove)
        return (ExitStatus.exited(0) if forking else None), main

    async def start_container(self) -> tuple[ExitStatus | None, MainProcess | None]:
        if self._container is None:
            raise RuntimeError(f"{self._unit} has no [Container] section")
        spec = self._container
        ctx = self._docker({})
        try:
            if spec.name:  # like Quadlet's --replace: a leftover container of the same name goes first
                try:
                    await self._runtime.remove(spec.name, force=True)
                except NoSuchContainer:
                    pass
            container = await start_container(Run(spec, remove=True), ctx, role="main")
        except DockerCommandFailed as e:
            ctx.say(e.message, "stderr")
            return ExitStatus.exited(e.exit_code), None
        except RuntimeFailure as e:
            ctx.say(f"docker: Error response from daemon: {e.message}", "stderr")
            return ExitStatus.exited(EXIT_DAEMON_ERROR), None
        return None, self._container_main(container, remove=True)

    async def wait_for_engine(self) -> None:
        try:
            await self._runtime.ping()
            return
        except EngineUnavailable as e:
            self._journal.write(f"{self._unit}: Waiting for the Docker engine: {e}")
        await until_engine_answers(self._runtime, self._clock)
        self._journal.write(f"{self._unit}: The Docker engine answers.")

    async def adopt(self) -> MainProcess | None:
        """This machine's running main container of this version of the unit, if any.

        Main containers of the unit this machine no longer wants go: a stopped one is removed, and a running one of
        an older version of the unit is stopped and removed, so that the current version can start in its place.
        """
        owned = {LABEL_UNIT: self._unit, LABEL_MACHINE: self._labels[LABEL_MACHINE], LABEL_ROLE: "main"}
        try:
            candidates = await self._runtime.list(owned)
        except RuntimeFailure as e:
            self._journal.write(f"{self._unit}: Cannot look for a running container to adopt: {e}")
            return None
        adopted: ContainerMain | None = None
        for state in candidates:
            current = state.labels.get(LABEL_HASH) == self._hash
            if state.running and current and adopted is None:
                remove = state.labels.get(LABEL_REMOVE) == "1"
                adopted = self._container_main(state.id, remove=remove, since=self._clock.time())
                continue
            what = "running container of an older version" if state.running else f"{state.status} container"
            self._journal.write(f"{self._unit}: Removing {what} {state.name} ({state.id[:12]}) of this unit.")
            try:
                if state.running:
                    await self._runtime.stop(state.id, None)
                await self._runtime.remove(state.id, force=True)
            except RuntimeFailure as e:
                self._journal.write(f"{self._unit}: Could not remove {state.name}: {e}")
        return adopted

    # --- main processes ---------------------------------------------------------------------------------------

    def _docker(self, env: Mapping[str, str]) -> DockerContext:
        return DockerContext(self._runtime, self._labels, env, self._sink)

    def _container_main(self, container: str, *, remove: bool, since: float = 0.0) -> ContainerMain:
        assert self._tg is not None, "attach() the actor's task group first"
        main = ContainerMain(self._runtime, container, remove=remove, clock=self._clock, events=self._events)
        self._tg.start_soon(_follow_output, self._runtime, container, self._sink, since)
        return main

    async def _start_process(self, command: PreparedCommand) -> tuple[ExitStatus | None, MainProcess | None]:
        assert self._tg is not None, "attach() the actor's task group first"
        try:
            main: ProcessMain = await self._tg.start(self._host_process, command)
        except SpawnFailed as e:
            self._journal.write(f"{self._unit}: {e}")
            return e.exit_status, None
        return None, main

    async def _host_process(self, command: PreparedCommand, *, task_status: TaskStatus[ProcessMain]) -> None:
        """Keep a main subprocess's spawn block open for its whole life."""
        async with self._processes.spawn(
            command.argv, env=command.env, sink=self._sink, argv0=command.argv0
        ) as process:
            main = ProcessMain(process)
            task_status.started(main)
            await process.wait()


class ContainerMain:
    """A main container. Its end comes from the agent's event hub, or else from the engine's wait call; either way
    it is asked again after the engine comes back."""

    __slots__ = ("_clock", "_container", "_events", "_oom_killed", "_remove", "_runtime", "_status")

    def __init__(
        self,
        runtime: ContainerRuntime,
        container: str,
        *,
        remove: bool,
        clock: Clock,
        events: EngineEvents | None = None,
    ) -> None:
        self._runtime = runtime
        self._container = container
        self._remove = remove
        self._clock = clock
        self._events = events
        self._status: ExitStatus | None = None
        self._oom_killed = False

    @property
    def description(self) -> str:
        return f"container {self._container[:12]}"

    @property
    def container_id(self) -> str | None:
        return self._container

    @property
    def pid(self) -> int | None:
        return None

    @property
    def oom_killed(self) -> bool:
        return self._oom_killed

    async def wait(self) -> ExitStatus:
        while self._status is None:
            if self._events is not None:
                await self._wait_on_hub(self._events)
            else:
                await self._wait_call()
        return self._status

    async def signal(self, signum: int) -> None:
        try:
            await self._runtime.kill(self._container, str(signum))
        except RuntimeFailure:
            pass  # already ended (409) or gone (404): wait() reports how

    async def release(self) -> None:
        if not self._remove:
            return
        with anyio.move_on_after(CLEANUP_SECONDS):  # a hung engine must not hold up a stop for ever
            try:
                state = await self._runtime.inspect(self._container)
                if not state.running:  # KillMode=none may leave it running: then it is not ours to remove
                    await self._runtime.remove(self._container, force=True)
            except NoSuchContainer:
                pass

    async def _wait_on_hub(self, events: EngineEvents) -> None:
        """Watch for the end through the hub, for as long as this call lasts.

        The watcher goes with the call: a cancelled wait (a stop, an actor detaching) leaves nothing registered,
        and the next call looks again.
        """
        try:
            death = await events.death_of(self._container)
        except EngineUnavailable:
            await until_engine_answers(self._runtime, self._clock)
            return
        except RuntimeFailure:  # an odd answer: look again a little later rather than at once
            await self._clock.sleep(ENGINE_RETRY_MAX)
            return
        try:
            await death.wait()
        finally:
            death.close()
        assert death.exit_code is not None
        self._status, self._oom_killed = ExitStatus.exited(death.exit_code), death.oom_killed

    async def _wait_call(self) -> None:
        """Hold the engine's wait call open until the container ends; then inspect it for the OOM killer's part."""
        try:
            code = await self._runtime.wait(self._container)
        except NoSuchContainer:
            self._status = ExitStatus.exited(VANISHED)
        except EngineUnavailable:
            await until_engine_answers(self._runtime, self._clock)
            await self._look_after_outage()
        except RuntimeFailure:  # an odd answer: look again a little later rather than at once
            await self._clock.sleep(ENGINE_RETRY_MAX)
            await self._look_after_outage()
        else:
            self._status = ExitStatus.exited(code)
            try:
                self._oom_killed = (await self._runtime.inspect(self._container)).oom_killed
            except RuntimeFailure:
                pass  # gone already: the exit code is all there is to know

    async def _look_after_outage(self) -> None:
        """After an engine outage: the container's end if it ended meanwhile; nothing if it still runs."""
        try:
            state = await self._runtime.inspect(self._container)
        except NoSuchContainer:
            self._status = ExitStatus.exited(VANISHED)
        except RuntimeFailure:
            pass
        else:
            if not state.running:
                self._status, self._oom_killed = ExitStatus.exited(state.exit_code), state.oom_killed


class ProcessMain:
    """A main subprocess, alive as long as the executor's task hosting it."""

    __slots__ = ("_process",)

    def __init__(self, process: SpawnedProcess) -> None:
        self._process = process

    @property
    def description(self) -> str:
        return f"process {self._process.pid}"

    @property
    def container_id(self) -> str | None:
        return None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def oom_killed(self) -> bool:
        return False  # the OOM killer's part in a subprocess's end is not told apart from any SIGKILL

    async def wait(self) -> ExitStatus:
        return await self._process.wait()

    async def signal(self, signum: int) -> None:
        self._process.signal(signum)

    async def release(self) -> None:
        return None


async def _follow_output(runtime: ContainerRuntime, container: str, sink: LogSink, since: float) -> None:
    """A main container's output into the journal, for as long as it runs (and the engine answers)."""
    try:
        await runtime.follow_logs(container, sink, since=since)
    except RuntimeFailure:
        pass  # the engine went away: the container's end is noticed by ContainerMain.wait(), not here
