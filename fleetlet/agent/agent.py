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

from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.node import Node
from fleetlet.agent.reconciler import Reconciler
from fleetlet.agent.supervisor import Supervisor
from fleetlet.agent.sweep import sweep_orphans
from fleetlet.agent.view import AgentView
from fleetlet.api import fleet_v1_app
from fleetlet.clock import SystemClock
from fleetlet.engine.engine import Engine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.subprocess_runner import SubprocessRunner
from fleetlet.registry.sqlite import SqliteRegistry
from fleetlet.service.journal import FileJournal, Journal
from fleetlet.units.specifiers import MachineFacts

log = logging.getLogger("fleetlet.agent")

SOCKET_NAME = "fleetlet.sock"
REGISTRY_NAME = "registry.sqlite"


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
    registry: Path | None = None  # the SQLite registry's file; None: REGISTRY_NAME in the state directory

    @property
    def registry_path(self) -> Path:
        return self.registry or self.state_dir / REGISTRY_NAME


# Reads the metadata again on SIGHUP (from the config file); raises FleetletError with a one-line reason.
MetadataSource = Callable[[], Mapping[str, str]]


async def serve(config: AgentConfig, reload_metadata: MetadataSource | None = None) -> None:
    """Run the agent until SIGINT or SIGTERM; AgentStartupError when it cannot start.

    On SIGHUP the machine's metadata becomes what ``reload_metadata`` returns; if it fails, the old metadata stays.
    """
    clock = SystemClock()
    _ignore_sighup_until_handled()
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
            registry = await stack.enter_async_context(SqliteRegistry(config.registry_path, clock))
        except (OSError, FleetletError) as exc:
            raise AgentStartupError(f"cannot open the registry {config.registry_path}: {exc}") from exc
        runtime = await stack.enter_async_context(DockerRuntime(config.docker_url))
        machine = LocalMachine(MachineSpec(config.machine_id, config.metadata, config.public_ip))
        view = AgentView(machine, journal_dir, clock)
        close_api = await _start_api(fleet_v1_app(registry, view=view), config, stack)

        facts = MachineFacts(hostname=os.uname().nodename, machine_id=config.machine_id, boot_id=_boot_id())
        stopping = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(_signals, stopping, machine, reload_metadata)
            events = EngineEvents(runtime, clock)
            await tg.start(events.run)
            engine = Engine(registry, lambda: [machine.spec], clock, machine_id=config.machine_id)
            machine.subscribe(engine.machines_changed)
            view.engine = engine
            await tg.start(engine.run)
            node = Node(runtime, SubprocessRunner(), clock, facts, events)

            def journals(unit: str) -> Journal:
                return FileJournal(journal_dir, unit, clock)

            supervisor = Supervisor(node, journals)
            await tg.start(supervisor.run)
            view.supervisor = supervisor
            reconciler = Reconciler(registry, supervisor, lambda: machine.spec, clock)
            machine.subscribe(reconciler.wake)
            reconciling = anyio.CancelScope()

            async def reconcile(*, task_status: TaskStatus[None]) -> None:
                with reconciling:
                    await reconciler.run(task_status=task_status)

            await tg.start(reconcile)
            # Every unit that belongs here is loaded now and has adopted its container: the rest are orphans.
            await sweep_orphans(runtime, config.machine_id, lambda unit: supervisor.status(unit) is not None)
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


async def _signals(
    stopping: anyio.Event,
    machine: LocalMachine,
    reload_metadata: MetadataSource | None,
    *,
    task_status: TaskStatus[None],
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            if signum != signal.SIGHUP:
                stopping.set()
            elif reload_metadata is None:
                log.info("no config file to reload the metadata from; keeping it")
            else:
                try:
                    metadata = reload_metadata()
                except FleetletError as exc:
                    log.error("not reloading the metadata: %s", exc)
                    continue
                if not machine.set_metadata(metadata):
                    log.info("metadata unchanged")


def _ignore_sighup_until_handled() -> None:
    """The API answers a moment before the signal receiver is installed: a SIGHUP then must not kill the agent.

    (SIGTERM keeps its default action meanwhile: stopping is what it asks for.) Only the main thread may do this;
    an agent embedded elsewhere leaves signals to its host.
    """
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:
        pass


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return ""
