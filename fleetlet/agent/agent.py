"""The agent: one machine's registry, API, engine, unit supervisor and reconciler, in one task group.

:func:`serve` binds everything that can fail at startup (state directory, registry, API sockets) before the task
group starts, so such failures are one :class:`AgentStartupError`, not a traceback from deep inside a group. It runs
until SIGINT or SIGTERM; then it closes the API, stops reconciling, and lets the actors detach (their containers
keep running for the next agent to adopt), or with ``purge`` stops every unit first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.agent.node import Node
from fleetlet.agent.reconcile import DesiredUnit, plan
from fleetlet.agent.supervisor import Supervisor
from fleetlet.api import UnitState, fleet_v1_app
from fleetlet.clock import Clock, SystemClock
from fleetlet.engine.engine import Engine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.subprocess_runner import SubprocessRunner
from fleetlet.registry.errors import RevisionCompacted
from fleetlet.registry.model import Change
from fleetlet.registry.protocol import Registry
from fleetlet.registry.sqlite import SqliteRegistry
from fleetlet.service.journal import FileJournal, Journal
from fleetlet.units.check import CheckedUnit, load_unit
from fleetlet.units.specifiers import MachineFacts

log = logging.getLogger("fleetlet.agent")

SOCKET_NAME = "fleetlet.sock"
REGISTRY_NAME = "registry.sqlite"
# A reconcile pass also runs this often without any registry change: it restarts units that ended on their own.
RECONCILE_INTERVAL = 10.0
WATCH_BUFFER = 256


class AgentStartupError(FleetletError):
    """The agent cannot start: its message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What ``fleetlet agent`` was told."""

    state_dir: Path
    machine_id: str
    host: str
    port: int
    docker_url: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    public_ip: str = ""
    purge: bool = False


class Reconciler:
    """Keeps the supervisor in line with this machine's part of the schedule.

    A pass runs at start, after every registry change and every ``interval`` seconds; changes that arrive during a
    pass coalesce into one more pass.
    """

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        machine_id: str,
        clock: Clock,
        *,
        interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self._machine_id = machine_id
        self._clock = clock
        self._interval = interval
        self._wake = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started after the first pass."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow)
            tg.start_soon(self._tick)
            await self.reconcile()
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.reconcile()

    async def reconcile(self) -> None:
        """One pass: what the registry wants here against what the actors report."""
        view = await self._registry.machine_schedule(self._machine_id)
        desired: dict[str, DesiredUnit] = {}
        units: dict[str, CheckedUnit] = {}
        for name in sorted(view.entries):
            record = await self._registry.get_unit(name)
            if record is None or record.desired_state == "inactive":
                continue
            try:
                checked = load_unit(record.text, name)
            except FleetletError as exc:  # accepted by an older fleetlet, perhaps: nothing to run
                log.warning("%s: cannot load the unit: %s", name, exc)
                continue
            desired[name] = DesiredUnit(name, checked.hash, record.desired_state, record.revision)
            units[name] = checked
        await self._supervisor.apply(plan(desired, self._supervisor.current()), units)

    async def _tick(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            self._wake.set()

    async def _follow(self) -> None:
        """Wake a pass on every change; a watch that fell behind starts again from the current revision."""
        while True:
            revision = await self._registry.revision()
            send, receive = anyio.create_memory_object_stream[Change](WATCH_BUFFER)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, revision, send)
                async with receive:
                    async for _ in receive:
                        self._wake.set()
            self._wake.set()

    async def _watch(self, revision: int, sink: MemoryObjectSendStream[Change]) -> None:
        try:
            await self._registry.watch(revision, sink)
        except RevisionCompacted as exc:
            log.info("registry watch fell behind (%s); watching again", exc)


async def serve(config: AgentConfig) -> None:
    """Run the agent until SIGINT or SIGTERM; AgentStartupError when it cannot start."""
    clock = SystemClock()
    journal_dir = config.state_dir / "journal"
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
        probe = config.state_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AgentStartupError(f"state directory {config.state_dir} is not writable: {exc.strerror or exc}") from exc

    async with contextlib.AsyncExitStack() as stack:
        try:
            registry = await stack.enter_async_context(SqliteRegistry(config.state_dir / REGISTRY_NAME, clock))
        except (OSError, FleetletError) as exc:
            raise AgentStartupError(f"cannot open the registry in {config.state_dir}: {exc}") from exc
        runtime = await stack.enter_async_context(DockerRuntime(config.docker_url))
        machine = MachineSpec(config.machine_id, config.metadata, config.public_ip)
        supervisor: Supervisor | None = None  # the API answers before the supervisor exists: no states yet

        def states() -> list[UnitState]:
            if supervisor is None:
                return []
            return [
                UnitState(s.name, s.hash, config.machine_id, s.load, s.active, s.sub) for s in supervisor.statuses()
            ]

        app = fleet_v1_app(registry, states=states, machines=lambda: [machine])
        close_api = await _start_api(app, config, stack)

        facts = MachineFacts(hostname=os.uname().nodename, machine_id=config.machine_id, boot_id=_boot_id())
        stopping = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(_signals, stopping)
            events = EngineEvents(runtime, clock)
            await tg.start(events.run)
            engine = Engine(registry, lambda: [machine], clock, machine_id=config.machine_id)
            await tg.start(engine.run)
            node = Node(runtime, SubprocessRunner(), clock, facts, events)

            def journals(unit: str) -> Journal:
                return FileJournal(journal_dir, unit, clock)

            supervisor = Supervisor(node, journals)
            await tg.start(supervisor.run)
            reconciling = anyio.CancelScope()

            async def reconcile(*, task_status: TaskStatus[None]) -> None:
                with reconciling:
                    await Reconciler(registry, supervisor, config.machine_id, clock).run(task_status=task_status)

            await tg.start(reconcile)
            log.info(
                "machine %s ready: API on http://%s:%d and unix://%s",
                config.machine_id,
                config.host,
                config.port,
                config.state_dir / SOCKET_NAME,
            )
            await stopping.wait()
            log.info("stopping: %s", "stopping every unit (--purge)" if config.purge else "leaving units running")
            await close_api()  # no new requests while the actors go
            reconciling.cancel()
            await supervisor.aclose(purge=config.purge)
            tg.cancel_scope.cancel()
    log.info("stopped")


async def _start_api(
    app: web.Application, config: AgentConfig, stack: contextlib.AsyncExitStack
) -> Callable[[], Awaitable[None]]:
    """Serve the API on ``--listen`` and the state directory's socket; returns how to close it (once or more)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            await runner.cleanup()

    stack.push_async_callback(close)
    try:
        await web.TCPSite(runner, config.host, config.port).start()
    except OSError as exc:
        raise AgentStartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    path = config.state_dir / SOCKET_NAME
    try:
        path.unlink(missing_ok=True)  # left by an agent that was killed; the state dir is ours alone
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        raise AgentStartupError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return close


async def _signals(stopping: anyio.Event, *, task_status: TaskStatus[None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            stopping.set()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return ""
