"""The agent: one machine's registry, API, engine, unit supervisor and reconciler, in one task group.

:class:`Agent` runs that node inside its caller's event loop, for as long as an ``async with`` block lasts: a
program embeds a whole machine with it. It binds everything that can fail at startup (state directory, registry,
API sockets, the engine's first answer) so that such failures are one :class:`AgentStartupError`, not a traceback
from deep inside a task group. Leaving the block closes the API, stops reconciling, and lets the actors detach
(their containers keep running for the next agent to adopt), or with ``purge`` stops every unit first.

:func:`serve` is ``fleetlet agent``: an Agent that runs until SIGINT or SIGTERM and reloads its metadata on SIGHUP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
from aiohttp import web
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.agent.gossip import AgentGossip
from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.node import Node
from fleetlet.agent.reconciler import Reconciler
from fleetlet.agent.supervisor import Supervisor
from fleetlet.agent.sweep import sweep_orphans
from fleetlet.agent.view import AgentView
from fleetlet.api import fleet_v1_app
from fleetlet.api.registry import RegistryService
from fleetlet.client import DEFAULT_TIMEOUT, Client
from fleetlet.clock import Clock, SystemClock
from fleetlet.cluster.auth import ClusterKeyError, load_key, registry_token
from fleetlet.cluster.errors import GossipRefused
from fleetlet.cluster.gossiper import GossipSettings
from fleetlet.engine.engine import Engine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.errors import FleetletError
from fleetlet.events.hub import EventHub
from fleetlet.events.journal_taps import JournalTaps
from fleetlet.events.local_feeds import LeaderFeed, MachineFeed, PlacementFeed, StateFeed
from fleetlet.events.on_demand import OnDemand
from fleetlet.events.registry_feed import RegistryFeed
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.runtime import RuntimeFailure
from fleetlet.exec.subprocess_runner import SubprocessRunner
from fleetlet.registry.errors import RegistryError, RegistryUnavailable
from fleetlet.registry.etcd import EtcdRegistry
from fleetlet.registry.etcd_settings import EtcdSettings, is_etcd_url, parse_etcd_url
from fleetlet.registry.protocol import Registry
from fleetlet.registry.remote import RemoteRegistry, locate
from fleetlet.registry.sqlite import SqliteRegistry
from fleetlet.service.journal import FileJournal, Journal
from fleetlet.service.states import UnitStatus
from fleetlet.units.specifiers import MachineFacts

log = logging.getLogger("fleetlet.agent")

SOCKET_NAME = "fleetlet.sock"
REGISTRY_NAME = "registry.sqlite"
# A leader's term unrenewed: how long after a leader dies its successor takes over (an etcd lease's TTL).
DEFAULT_LEADER_TTL = 5.0


class AgentStartupError(FleetletError):
    """The agent cannot start: its message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What the agent is told: by ``fleetlet agent``'s settings (:mod:`fleetlet.agent.config`) or by a program.

    ``host`` None serves the API on the state directory's unix socket only; ``port`` 0 takes a free port, which the
    running :class:`Agent` tells as ``address``. An empty ``docker_url`` is ``$DOCKER_HOST``, else the local socket.
    """

    state_dir: Path
    machine_id: str
    host: str | None = None
    port: int = 0
    docker_url: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    public_ip: str = ""
    purge: bool = False
    registry: Path | None = None  # the SQLite registry's file; None: REGISTRY_NAME in the state directory
    # The registry on etcd instead: every agent on it campaigns to lead, and ``join`` names gossip peers only.
    etcd: EtcdSettings | None = None
    leader_ttl: float = DEFAULT_LEADER_TTL
    # The cluster (only with a host: peers gossip over TCP). ``join``: members to join through; ``advertise``: the
    # URL the others reach this agent at (default: http://host:port as bound).
    join: tuple[str, ...] = ()
    cluster_key: Path | None = None
    advertise: str = ""
    gossip: GossipSettings = field(default_factory=GossipSettings)

    @property
    def registry_path(self) -> Path:
        return self.registry or self.state_dir / REGISTRY_NAME


@dataclass(frozen=True, slots=True)
class _Running:
    """What shutting the node down acts on, in the order it does."""

    close_api: Callable[[], Awaitable[None]]
    reconciling: anyio.CancelScope
    supervisor: Supervisor
    gossip: AgentGossip | None


class Agent:
    """One machine's node, run inside the caller's event loop (asyncio or anyio) by ``async with``.

    Entering returns once the API answers and the first reconcile pass is done: the units that belong here have
    started or adopted their containers, and orphaned containers are gone. Leaving shuts the node down as SIGTERM
    does ``fleetlet agent``, even when the block raised or was cancelled. The agent installs no signal handlers.

    The node's tasks live in a task group that ``__aenter__`` enters and ``__aexit__`` leaves, so, as for any anyio
    task group, enter and leave the agent in the same task. Should the node fail, the block is cancelled and the
    failure raised from it. An Agent runs once.

    ``events`` is the node's :class:`~fleetlet.events.hub.EventHub`. On an etcd registry its ``unit`` and
    ``schedule`` events (the cluster's units and every placement) reach it only while the registry feed is held:
    while an event-stream connection that can get them is open, or a block of :meth:`registry_events` runs, and
    for a while after (the feed otherwise reads every decision made for every machine); meanwhile the hub's
    latest unit and schedule events are those of when it was last held. On the embedded SQLite registry, or
    joined to a server, the feed always runs.
    """

    def __init__(self, config: AgentConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        self._machine = LocalMachine(MachineSpec(config.machine_id, config.metadata, config.public_ip))
        # Every change on this node as an indexed event: what /v1/events serves, and what an embedding program may
        # subscribe to directly.
        self.events = EventHub(self._clock)
        self._address: tuple[str, int] | None = None
        self._resources = contextlib.AsyncExitStack()  # registry, engine connection, API: closed after the tasks
        self._tg: TaskGroup | None = None
        self._running: _Running | None = None
        self._entered = False
        self._advertised = ""  # the URL the other members reach this agent at, once its API listens
        self._remote_registry = ""  # the server's URL, when this agent joined a cluster
        self._etcd: EtcdRegistry | None = None  # the registry, when it is on etcd: its member directory too
        self._etcd_url = ""
        self._registry_feed: OnDemand | None = None  # on etcd: the registry feed, run while held

    @property
    def machine_id(self) -> str:
        return self.config.machine_id

    @property
    def socket_path(self) -> Path:
        return self.config.state_dir / SOCKET_NAME

    @property
    def endpoint(self) -> str:
        """The API's unix socket as a :class:`fleetlet.Client` endpoint."""
        return f"unix://{self.socket_path}"

    @property
    def address(self) -> tuple[str, int] | None:
        """The host and port the API listens on, the port chosen when ``config.port`` is 0; None without a host."""
        return self._address

    @property
    def metadata(self) -> Mapping[str, str]:
        return self._machine.spec.metadata

    def set_metadata(self, metadata: Mapping[str, str]) -> bool:
        """Replace this machine's metadata (as SIGHUP does); placement and global units follow. True if it changed."""
        return self._machine.set_metadata(metadata)

    @contextlib.asynccontextmanager
    async def registry_events(self) -> AsyncIterator[None]:
        """Have the cluster's ``unit`` and ``schedule`` events reach ``events`` while the block runs.

        On etcd the block starts once the registry feed has read the registry and published what changed since
        it last ran (if etcd cannot be read, a warning is logged and the block runs without them). Elsewhere the
        feed always runs, and this does nothing.
        """
        if self._registry_feed is None:
            yield
            return
        async with self._registry_feed.held():
            yield

    def client(self, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """A client of this agent's API over its unix socket; use it as ``async with agent.client() as fleet:``."""
        return Client(self.endpoint, timeout=timeout)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an Agent runs once: make a new one to run again")
        self._entered = True
        try:
            self._running = await self._start()
        except BaseException:
            await self._leave()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        running, self._running = self._running, None
        if running is None:
            raise RuntimeError("the Agent is not running")
        try:
            # Shielded: a cancelled host still stops its units with --purge, and the actors detach in order.
            with anyio.CancelScope(shield=True):
                await self._shut_down(running)
        finally:
            await self._leave()
        log.info("stopped")

    async def _start(self) -> _Running:
        """Create and start every component of the node, in dependency order; the one place they are wired."""
        config, clock, machine = self.config, self._clock, self._machine
        if config.host is None and (config.cluster_key is not None or config.join or config.etcd is not None):
            # On etcd too: an agent that gossips with nobody takes itself for the whole cluster and, leading,
            # would move every other machine's units onto itself.
            option = "--join" if config.join else "--registry etcd://" if config.etcd else "--cluster-key"
            raise AgentStartupError(f"{option} needs --listen: without a TCP address there is no gossip")
        journal_dir = _writable_journal_dir(config.state_dir)
        key = self._cluster_key()
        registry = await self._open_registry(key)
        runtime = await self._resources.enter_async_context(DockerRuntime(config.docker_url or None))
        hub = self.events
        placement, states = PlacementFeed(hub), StateFeed(hub, config.machine_id)
        gossip = self._gossip(states, key) if config.host is not None else None
        view = AgentView(machine, journal_dir, clock, gossip)
        view.leader_url = self._remote_registry  # a joined agent's server leads, and knows why a unit is unplaced
        taps = JournalTaps(hub, view, config.machine_id, clock)
        feed = RegistryFeed(registry, hub, reasons=placement.reasons)
        if self._etcd is not None:
            # Run always, every agent's feed would get every decision made for every machine: run it on demand.
            self._registry_feed = OnDemand(
                feed.run, clock, name="the event stream's registry feed", failures=(RegistryError,)
            )
        app = fleet_v1_app(
            registry,
            view=view,
            clock=clock,
            events=hub,
            journal_taps=taps,
            registry_events=self._registry_feed.held if self._registry_feed is not None else None,
            gossip=gossip.endpoint if gossip is not None else None,
            registry_service=RegistryService(registry, self._registry_url, key, clock) if gossip is not None else None,
        )
        close_api, self._address = await _start_api(app, config, self._resources)

        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        MachineFeed(hub, machine).start()
        await tg.start(taps.run)
        if gossip is not None:
            await self._join(gossip, tg)
            await tg.start(gossip.gossiper.run)
        if self._registry_feed is not None:
            await tg.start(self._registry_feed.run)
        else:
            # Before the engine: its first decisions are events, told against what the feed has read.
            await tg.start(feed.run)
        engine_events = EngineEvents(runtime, clock)
        await tg.start(engine_events.run)
        if self._etcd is not None or not config.join:
            # The agent that holds the registry leads, or any agent on etcd; a joined agent runs what the leader
            # places on it.
            engine = Engine(
                registry,
                gossip.machines if gossip is not None else lambda: [machine.spec],
                clock,
                machine_id=config.machine_id,
                lease_ttl=config.leader_ttl,
                on_leadership=LeaderFeed(hub).leadership,
                on_unplaceable=placement.unplaceable,
                # A restarted server knows only itself at first: give the members running units a join's time.
                membership_grace=config.gossip.join_timeout if gossip is not None else 0.0,
            )
            machine.subscribe(engine.machines_changed)
            if gossip is not None:
                gossip.subscribe(engine.machines_changed)
            view.engine = engine
            await tg.start(engine.run)
        facts = MachineFacts(hostname=os.uname().nodename, machine_id=config.machine_id, boot_id=_boot_id())
        node = Node(runtime, SubprocessRunner(), clock, facts, engine_events)

        def journals(unit: str) -> Journal:
            return FileJournal(journal_dir, unit, clock)

        def publish(status: UnitStatus) -> None:
            states.publish(status)
            if gossip is not None:
                gossip.publish(status)

        def unloaded(unit: str) -> None:
            states.removed(unit)
            if gossip is not None:
                gossip.removed(unit)

        supervisor = Supervisor(node, journals, publish, on_unload=unloaded)
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
        try:
            await sweep_orphans(runtime, config.machine_id, lambda unit: supervisor.status(unit) is not None)
        except RuntimeFailure as exc:
            raise AgentStartupError(f"cannot list the containers of the Docker engine at {runtime.url}: {exc}") from exc
        log.info("machine %s ready: API on %s", config.machine_id, " and ".join(self._api_urls()))
        return _Running(close_api, reconciling, supervisor, gossip)

    def _cluster_key(self) -> bytes | None:
        if self.config.cluster_key is None:
            return None
        try:
            return load_key(self.config.cluster_key)
        except ClusterKeyError as exc:
            raise AgentStartupError(str(exc)) from exc

    async def _open_registry(self, key: bytes | None) -> Registry:
        """The cluster's registry: this agent's own SQLite file, or, joined, the server's over its API."""
        config = self.config
        if config.etcd is not None:
            return await self._open_etcd(config.etcd)
        if not config.join:
            try:
                return await self._resources.enter_async_context(SqliteRegistry(config.registry_path, self._clock))
            except (OSError, FleetletError) as exc:
                raise AgentStartupError(f"cannot open the registry {config.registry_path}: {exc}") from exc
        token = registry_token(key) if key is not None else None
        try:
            url = await locate(config.join, token=token)
        except RegistryUnavailable as exc:
            raise AgentStartupError(f"cannot join: no member answered where the registry is ({exc.reason})") from exc
        except FleetletError as exc:
            raise AgentStartupError(f"cannot join: {exc}") from exc
        if is_etcd_url(url):
            # The members keep the registry on etcd: use it as they do (and lead in turn), not through one of them.
            try:
                return await self._open_etcd(parse_etcd_url(url))
            except (AgentStartupError, ValueError) as exc:
                raise AgentStartupError(
                    f"{exc} (the cluster's registry is on etcd: give this agent --registry {url} and the etcd "
                    "settings it needs)"
                ) from exc
        self._remote_registry = url
        log.info("the cluster's registry is at %s", url)
        return await self._resources.enter_async_context(RemoteRegistry(url, token=token, clock=self._clock))

    async def _open_etcd(self, etcd: EtcdSettings) -> Registry:
        """The registry on etcd, checked to answer: an agent that cannot read its schedule has nothing to run."""
        try:
            registry = await self._resources.enter_async_context(etcd.registry(self._clock))
            await registry.revision()
            self._etcd, self._etcd_url = registry, etcd.url
        except (OSError, ValueError) as exc:
            raise AgentStartupError(f"cannot use the etcd registry {etcd.url}: {exc}") from exc
        except RegistryUnavailable as exc:
            raise AgentStartupError(f"cannot reach the etcd registry {etcd.url}: {exc.reason}") from exc
        except RegistryError as exc:
            raise AgentStartupError(f"cannot use the etcd registry {etcd.url}: {exc}") from exc
        log.info("the cluster's registry is etcd at %s", etcd.url)
        return registry

    def _registry_url(self) -> str:
        """Where the cluster's registry is, for a member that asks: etcd's URL (which holds no secret), the
        server's URL, or this agent's if it is it."""
        return self._etcd_url or self._remote_registry or self._advertised

    def _gossip(self, states: StateFeed, key: bytes | None) -> AgentGossip:
        """This agent's membership of the cluster, not yet joined: its dialer among the resources."""
        config = self.config
        gossip = AgentGossip(
            self._machine,
            self.events,
            states,
            self._clock,
            key=key,
            seeds=config.join,
            settings=config.gossip,
            capacity=_capacity(),
        )
        self._resources.push_async_callback(gossip.dialer.aclose)
        host = config.host or ""
        if key is None and _loopback(host):
            log.info("no cluster key: gossip and the API listen on loopback (%s) only", host)
        elif key is None:
            log.warning("no cluster key: anyone who reaches %s can join the cluster (give --cluster-key FILE)", host)
        return gossip

    async def _join(self, gossip: AgentGossip, tg: TaskGroup) -> None:
        assert self._address is not None
        self._advertised = self.config.advertise or _url(self.config.host or self._address[0], self._address[1])
        gossip.bind(self._advertised)
        if self._etcd is not None:
            # Listed before reading the others (etcd_directory says why), who then join through each other.
            directory = self._etcd.member_directory()
            await tg.start(directory.run, self.machine_id, self._advertised)
            try:
                listed = await directory.addresses()
            except RegistryError as exc:
                log.warning("cannot read the members listed in etcd (%s); joining through --join only", exc)
                listed = {}
            gossip.gossiper.add_seeds([url for member, url in listed.items() if member != self.machine_id])
            if not listed.keys() - {self.machine_id} and not self.config.join:
                return  # the first member on this etcd
        elif not self.config.join:
            return
        try:
            joined = await gossip.gossiper.join()
        except GossipRefused as exc:
            raise AgentStartupError(f"cannot join the cluster: {exc}") from exc
        if not joined:
            log.warning("no member of %s answered; joining when one does", ", ".join(gossip.gossiper.seeds))

    async def _shut_down(self, running: _Running) -> None:
        log.info("stopping: %s", "stopping every unit (--purge)" if self.config.purge else "leaving units running")
        if running.gossip is not None:
            await running.gossip.gossiper.leave()  # the others need not wait for the detector
        await running.close_api()  # no new requests while the actors go
        running.reconciling.cancel()
        await running.supervisor.aclose(purge=self.config.purge)

    async def _leave(self) -> None:
        """Cancel what still runs, leave the task group, close the resources.

        The group hears nothing of how the block or the startup ended: their exception propagates as it is, not
        wrapped in the group's ExceptionGroup, and a cancellation goes on to the scope that asked for it. What the
        group raises is a failure of the node itself.
        """
        try:
            if self._tg is not None:
                tg, self._tg = self._tg, None
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._resources.aclose()

    def _api_urls(self) -> list[str]:
        urls = [f"unix://{self.socket_path}"]
        if self._address is not None:
            urls.insert(0, _url(self.config.host or self._address[0], self._address[1]))
        return urls


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _capacity() -> dict[str, int]:
    """What this machine has, for the others to see (placement does not weigh it yet)."""
    capacity = {"cpus": os.cpu_count() or 1}
    try:
        capacity["memory"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return capacity


def _writable_journal_dir(state_dir: Path) -> Path:
    journal_dir = state_dir / "journal"
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AgentStartupError(f"state directory {state_dir} is not writable: {exc.strerror or exc}") from exc
    return journal_dir


async def _start_api(
    app: web.Application, config: AgentConfig, stack: contextlib.AsyncExitStack
) -> tuple[Callable[[], Awaitable[None]], tuple[str, int] | None]:
    """Serve the API on the host and port, if any, and the state directory's socket.

    Returns how to close it (once or more; the socket file goes too) and the address bound on the host.
    """
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    path = config.state_dir / SOCKET_NAME
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            await runner.cleanup()
            path.unlink(missing_ok=True)  # a socket left behind would say an agent still runs here

    stack.push_async_callback(close)
    address: tuple[str, int] | None = None
    if config.host is not None:
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as exc:
            raise AgentStartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
        bound = runner.addresses[0]  # (host, port), or IPv6's (host, port, flowinfo, scope_id)
        address = (str(bound[0]), int(bound[1]))
    try:
        path.unlink(missing_ok=True)  # left by an agent that was killed; the state dir is ours alone
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        raise AgentStartupError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return close, address


# --- fleetlet agent ------------------------------------------------------------------------------------------------

# Reads the metadata again on SIGHUP (from the config file); raises FleetletError with a one-line reason.
MetadataSource = Callable[[], Mapping[str, str]]


async def serve(config: AgentConfig, reload_metadata: MetadataSource | None = None) -> None:
    """Run the agent until SIGINT or SIGTERM; AgentStartupError when it cannot start.

    On SIGHUP the machine's metadata becomes what ``reload_metadata`` returns; if it fails, the old metadata stays.
    """
    _ignore_sighup_until_handled()
    # Installed before the node starts: a signal that comes meanwhile (the first reconcile pass may pull images)
    # waits in the receiver, so a SIGTERM then still stops the agent cleanly, as soon as it has started.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with Agent(config) as agent:
            await _until_stopped(signals, agent, reload_metadata)


async def _until_stopped(
    signals: AsyncIterator[signal.Signals], agent: Agent, reload_metadata: MetadataSource | None
) -> None:
    async for signum in signals:
        log.info("received %s", signal.Signals(signum).name)
        if signum != signal.SIGHUP:
            return
        if reload_metadata is None:
            log.info("no config file to reload the metadata from; keeping it")
            continue
        try:
            metadata = reload_metadata()
        except FleetletError as exc:
            log.error("not reloading the metadata: %s", exc)
            continue
        if not agent.set_metadata(metadata):
            log.info("metadata unchanged")


def _ignore_sighup_until_handled() -> None:
    """A SIGHUP (a reload) must never kill the agent, not even before the signal receiver is installed.

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
