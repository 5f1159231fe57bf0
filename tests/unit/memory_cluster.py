"""A whole cluster in one event loop: N nodes wired as ``fleetlet agent`` wires one, over fakes and a ManualClock.

Each node has what a real agent has for placement and running units: a :class:`LocalMachine` (its ID and
metadata), a :class:`Gossiper` on a shared :class:`MemoryNetwork`, a :class:`Supervisor` over its own
:class:`FakeRuntime` (one engine per machine, as on real machines: container names never clash across nodes, and
a killed node's containers stay where they were), and a :class:`Reconciler` over the one shared
:class:`MemoryRegistry` (the server's). The first node also runs the :class:`Engine` over the members its gossiper
sees as placeable, as the embedded server does; the others are joined agents that only run what it places. With
``every_node_leads`` every node runs an engine, as agents on etcd do: they campaign for the registry's leader
record, one leads, and another takes over when it dies.

The wiring copies :meth:`fleetlet.agent.agent.Agent._start` and :class:`fleetlet.agent.gossip.AgentGossip`, minus
the API, the event hub and unit-state dissemination (placement reads none of them): a metadata change updates the
gossiped record and wakes the reconciler, and every membership event wakes the engine. A restarted node sweeps
orphaned containers after its first reconcile pass, as the agent does at start.

Time is virtual: :meth:`MemoryCluster.advance` moves the clock from one sleeper's deadline to the next and lets
every task run until blocked at each, so gossip rounds, the failure detector and the engine's settle time happen
at the moments they would in real time, only instantly and in the same order on every run (every gossiper's
randomness is seeded). Times measured with :meth:`MemoryCluster.until` are therefore exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.agent.machine import LocalMachine
from fleetlet.agent.node import Node as UnitNode
from fleetlet.agent.reconciler import Reconciler
from fleetlet.agent.supervisor import Supervisor
from fleetlet.agent.sweep import sweep_orphans
from fleetlet.clock import ManualClock
from fleetlet.cluster.gossiper import Gossiper, GossipSettings
from fleetlet.cluster.membership import MembershipEvent, Status
from fleetlet.cluster.memory_network import MemoryNetwork
from fleetlet.cluster.records import MachineRecord
from fleetlet.engine.engine import DEFAULT_LEASE_TTL, Engine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.exec.fake_runtime import FakeRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, LABEL_UNIT
from fleetlet.exec.subprocess_runner import FakeProcessRunner
from fleetlet.registry import MemoryRegistry
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.model import Change, DesiredState, LeaderRecord, ScheduleView, UnitPage, UnitRecord
from fleetlet.registry.protocol import DEFAULT_PAGE
from fleetlet.service.journal import Journal, MemoryJournal
from fleetlet.units.model import UnitFile
from fleetlet.units.specifiers import MachineFacts
from fleetlet.units.syntax import parse

# A container named after its unit (%p%i: "c-hello1" for hello@1.service), running until it is stopped.
SLEEPER = "[Service]\nExecStart=/usr/bin/docker run --rm --name c-%p%i busybox sleep 1000\n"


# A test's question about the cluster, asked at every deadline: a plain or an async function.
Condition = Callable[[], bool | Awaitable[bool]]


def unit_text(x_fleet: str = "") -> str:
    """A sleeper unit with these ``[X-Fleet]`` lines (one requirement per line)."""
    return SLEEPER + (f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else "")


class RegistryLink:
    """The shared registry as one node's engine reaches it. :meth:`cut` (a ``kill -9``) fails every later call,
    so the killed engine cannot resign on its way out, as a killed agent cannot: its term must run out."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self._registry = registry
        self._cut = False

    def cut(self) -> None:
        self._cut = True

    def _reach(self) -> MemoryRegistry:
        if self._cut:
            raise RegistryUnavailable("mem://registry", "the node was killed")
        return self._registry

    async def revision(self) -> int:
        return await self._reach().revision()

    async def get_unit(self, name: str) -> UnitRecord | None:
        return await self._reach().get_unit(name)

    async def list_units(self, *, limit: int = DEFAULT_PAGE, after: str | None = None) -> UnitPage:
        return await self._reach().list_units(limit=limit, after=after)

    async def put_unit(
        self, name: str, unit: UnitFile, *, desired_state: DesiredState = "inactive", expect_revision: int | None = None
    ) -> int:
        return await self._reach().put_unit(name, unit, desired_state=desired_state, expect_revision=expect_revision)

    async def set_desired_state(self, name: str, state: DesiredState, *, expect_revision: int | None = None) -> int:
        return await self._reach().set_desired_state(name, state, expect_revision=expect_revision)

    async def delete_unit(self, name: str, *, expect_revision: int | None = None) -> int:
        return await self._reach().delete_unit(name, expect_revision=expect_revision)

    async def schedule(self) -> ScheduleView:
        return await self._reach().schedule()

    async def machine_schedule(self, machine_id: str) -> ScheduleView:
        return await self._reach().machine_schedule(machine_id)

    async def set_machine(
        self, unit: str, machine_id: str, *, expect_revision: int | None = None, term: int | None = None
    ) -> int:
        return await self._reach().set_machine(unit, machine_id, expect_revision=expect_revision, term=term)

    async def clear_machine(self, unit: str, *, expect_revision: int | None = None, term: int | None = None) -> int:
        return await self._reach().clear_machine(unit, expect_revision=expect_revision, term=term)

    async def leader(self) -> LeaderRecord | None:
        return await self._reach().leader()

    async def campaign(self, machine_id: str, ttl: float) -> LeaderRecord | None:
        return await self._reach().campaign(machine_id, ttl)

    async def renew(self, record: LeaderRecord, ttl: float) -> LeaderRecord:
        return await self._reach().renew(record, ttl)

    async def resign(self, record: LeaderRecord) -> None:
        await self._reach().resign(record)

    async def watch(self, from_revision: int, sink: MemoryObjectSendStream[Change], *, prefix: str = "") -> None:
        await self._reach().watch(from_revision, sink, prefix=prefix)

    async def aclose(self) -> None:
        """The registry is the cluster's: a node's link closes nothing."""


@dataclass(eq=False)
class ClusterNode:
    """One machine. Its runtime and metadata outlive the agent: a restart gets a fresh gossiper, supervisor and
    reconciler (a new agent process) over the same containers, as after ``kill -9`` and a new start."""

    index: int
    machine_id: str
    metadata: dict[str, str]
    runtime: FakeRuntime
    runs_engine: bool = False
    local: LocalMachine | None = None
    gossiper: Gossiper | None = None
    supervisor: Supervisor | None = None
    engine: Engine | None = None
    link: RegistryLink | None = None
    scope: anyio.CancelScope | None = None
    events: list[tuple[float, MembershipEvent]] = field(default_factory=list)  # (when heard, what)
    starts: int = 0

    @property
    def address(self) -> str:
        return f"mem://{self.machine_id[:8]}"

    @property
    def short_id(self) -> str:
        return self.machine_id[:8]

    @property
    def alive(self) -> bool:
        return self.scope is not None and not self.scope.cancel_called

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        """Change the running agent's metadata, as ``PATCH /fleet/v1/machines`` or a SIGHUP reload does."""
        assert self.alive, "the node is not running"
        assert self.local is not None
        self.metadata = dict(metadata)
        self.local.set_metadata(metadata)

    def heard(self, kind: str, member: ClusterNode) -> float:
        """When (virtual seconds) this node first heard ``member`` become ``kind`` (suspect, dead, joined, ...)."""
        return next(at for at, event in self.events if event.type == kind and event.member == member.machine_id)

    def view(self) -> dict[str, Status]:
        """This node's gossiped view: member ID -> status."""
        assert self.gossiper is not None
        return {record.id: status for record, status in self.gossiper.membership.members()}


class MemoryCluster:
    """Nodes sharing one registry, one network, one clock and one task group. Build it with :func:`memory_cluster`."""

    def __init__(
        self,
        clock: ManualClock,
        registry: MemoryRegistry,
        network: MemoryNetwork,
        tg: TaskGroup,
        settings: GossipSettings,
        *,
        every_node_leads: bool = False,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        self.clock = clock
        self.every_node_leads = every_node_leads
        self.lease_ttl = lease_ttl
        self.network = network
        self.registry = registry
        self.settings = settings
        self.nodes: list[ClusterNode] = []
        self.unplaceable_reports: list[Mapping[str, tuple[str, ...]]] = []
        self._tg = tg
        self._seed = 0

    # --- the machines --------------------------------------------------------------------------------------------

    async def add(self, metadata: Mapping[str, str] | None = None) -> ClusterNode:
        """Start one more machine; the first one added holds the engine (the server), the others join it."""
        index = len(self.nodes)
        if index >= 15:
            raise ValueError("machine IDs are one hex digit repeated: at most 15 nodes")
        node = ClusterNode(
            index,
            format(index + 1, "x") * 32,
            dict(metadata or {}),
            FakeRuntime(self.clock),
            runs_engine=index == 0 or self.every_node_leads,
        )
        self.nodes.append(node)
        await self._start(node)
        return node

    @property
    def leader(self) -> ClusterNode:
        """The node whose engine leads now; the first node (the server) unless every node may lead."""
        if not self.every_node_leads:
            return self.nodes[0]
        leading = [node for node in self.nodes if node.alive and node.engine is not None and node.engine.leading]
        assert len(leading) == 1, f"{len(leading)} nodes lead"
        return leading[0]

    def leading(self) -> list[ClusterNode]:
        """The running nodes whose engines think they lead: never more than one."""
        return [node for node in self.nodes if node.alive and node.engine is not None and node.engine.leading]

    @property
    def engine(self) -> Engine:
        engine = self.leader.engine
        assert engine is not None, "the leader's node is not running"
        return engine

    def kill(self, node: ClusterNode) -> None:
        """As ``kill -9`` of the agent: no goodbye to the cluster, its peers' connections break at once, and its
        containers keep running in its runtime (nobody stops them: a cancelled actor detaches)."""
        assert node.alive, "the node is not running"
        assert node.scope is not None
        self.network.detach(node.address)
        if node.link is not None:
            node.link.cut()
        node.scope.cancel()

    async def restart(self, node: ClusterNode) -> None:
        """Start a new agent on a killed node's machine: same ID, metadata and containers; a new gossip generation."""
        assert not node.alive, "kill the node first"
        await self.settle()  # the old agent's tasks are all gone before the new one starts
        await self._start(node)

    async def _start(self, node: ClusterNode) -> None:
        self._seed += 1
        node.starts += 1
        node.events = []
        node.local = local = LocalMachine(MachineSpec(node.machine_id, node.metadata))
        # Joined through the first node, as ``--join`` names the server; on etcd the member directory names any
        # live member, the first node included while it runs.
        others = [other.address for other in self.nodes if other is not node and other.alive]
        seeds = tuple(others[:1]) if self.every_node_leads else () if node.runs_engine else (self.nodes[0].address,)
        node.gossiper = gossiper = Gossiper(
            _record(node.machine_id, node.address, node.metadata),
            self.network.dialer(node.address),
            self.clock,
            settings=self.settings,
            seeds=seeds,
            # Distinct per run of the agent (it is what tells a restart apart), deterministic per test.
            generation=int(self.clock.monotonic() * 1000) * 100 + self._seed,
            rng=random.Random(self._seed),
            on_event=lambda event: self._membership_changed(node, event),
        )

        def metadata_changed() -> None:
            gossiper.set_record(_record(node.machine_id, node.address, local.spec.metadata))

        local.subscribe(metadata_changed)
        self.network.attach(node.address, gossiper)
        if seeds:
            await gossiper.join()
        node.scope = anyio.CancelScope()
        await self._tg.start(self._run, node, node.scope)

    async def _run(self, node: ClusterNode, scope: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
        """The agent's tasks, in the agent's order, all under ``scope`` so that :meth:`kill` ends them together."""
        assert node.gossiper is not None
        assert node.local is not None
        gossiper, local, clock = node.gossiper, node.local, self.clock
        with scope:
            async with anyio.create_task_group() as tg:
                await tg.start(gossiper.run)
                if node.runs_engine:
                    node.link = RegistryLink(self.registry)
                    node.engine = engine = Engine(
                        node.link,
                        lambda: [record.spec for record in gossiper.placeable()],
                        clock,
                        machine_id=node.machine_id,
                        lease_ttl=self.lease_ttl,
                        on_unplaceable=self.unplaceable_reports.append,
                        membership_grace=self.settings.join_timeout if self.every_node_leads else 0.0,
                    )
                    local.subscribe(engine.machines_changed)
                    await tg.start(engine.run)
                facts = MachineFacts(hostname=f"node{node.index}", machine_id=node.machine_id)
                unit_node = UnitNode(node.runtime, FakeProcessRunner(clock=clock), clock, facts)

                def journal(unit: str) -> Journal:
                    return MemoryJournal(unit, clock)

                node.supervisor = supervisor = Supervisor(unit_node, journal)
                await tg.start(supervisor.run)
                reconciler = Reconciler(self.registry, supervisor, lambda: local.spec, clock)
                local.subscribe(reconciler.wake)
                await tg.start(reconciler.run)
                await sweep_orphans(node.runtime, node.machine_id, lambda unit: supervisor.status(unit) is not None)
                task_status.started()
                await anyio.sleep_forever()

    def _membership_changed(self, node: ClusterNode, event: MembershipEvent) -> None:
        node.events.append((self.clock.monotonic(), event))
        if node.engine is not None:
            node.engine.machines_changed()

    # --- desired state -------------------------------------------------------------------------------------------

    async def submit(self, name: str, text: str, desired_state: DesiredState = "launched") -> None:
        """Put a unit in the registry with a desired state, as ``fleetctl start`` does (no placement)."""
        await self.registry.put_unit(name, parse(text, name), desired_state=desired_state)

    # --- time ----------------------------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Let every task run until all wait: on the clock, the network or the registry."""
        for _ in range(3):  # an actor's work may wake a reconciler, whose work wakes the fakes
            await self.clock.settle()

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``, from one sleeper's deadline to the next, settling at each.

        One jump would wake each sleeper once, however many intervals it spans: gossip would skip rounds and the
        failure detector would judge one long silence, not the heartbeats that the rounds would have carried.
        Jumping deadline to deadline runs every round, timeout and settle time at its exact virtual moment.
        """
        target = self.clock.monotonic() + seconds
        while await self._next(target):
            pass

    async def until(self, condition: Condition, *, within: float, each_step: Condition | None = None) -> float:
        """Advance deadline by deadline until ``condition()`` holds; the virtual seconds that took.

        ``each_step``, if given, must hold after every step on the way (an invariant: say, a pair never parts).
        Fails with AssertionError when the condition still does not hold after ``within`` virtual seconds.
        """
        started = self.clock.monotonic()
        target = started + within
        while True:
            await self.settle()
            if each_step is not None:
                assert await _holds(each_step), f"invariant broken after {self.clock.monotonic() - started:.3f}s"
            if await _holds(condition):
                return round(self.clock.monotonic() - started, 6)
            if not await self._next(target):
                raise AssertionError(f"not true within {within} virtual seconds")

    async def _next(self, target: float) -> bool:
        """Settle, then jump to the next deadline if it comes by ``target`` (True), else to ``target`` (False)."""
        await self.settle()
        deadline = self.clock.next_deadline
        reached = deadline is None or deadline > target
        moment = target if reached else deadline
        assert moment is not None
        now = self.clock.monotonic()
        self.clock.advance(max(moment - now, 0.0))
        if self.clock.monotonic() < moment:  # float rounding left it short of the deadline by an ulp
            self.clock.advance(math.ulp(moment))
        await self.settle()
        return not reached

    # --- what runs where -----------------------------------------------------------------------------------------

    def loaded(self, node: ClusterNode) -> dict[str, str]:
        """The units a running node's supervisor has, with their ``active/sub`` state."""
        if not node.alive or node.supervisor is None:
            return {}
        return {status.name: f"{status.active}/{status.sub}" for status in node.supervisor.statuses()}

    async def containers(self, node: ClusterNode) -> set[str]:
        """The units whose containers run in the node's runtime, whether or not its agent is alive."""
        return {
            c.labels[LABEL_UNIT]
            for c in await node.runtime.list({LABEL_MACHINE: node.machine_id})
            if c.status == "running"
        }

    async def container_ids(self, node: ClusterNode) -> dict[str, str]:
        """Unit -> the ID of its running container in the node's runtime (an adopted container keeps its ID)."""
        return {
            c.labels[LABEL_UNIT]: c.id
            for c in await node.runtime.list({LABEL_MACHINE: node.machine_id})
            if c.status == "running"
        }

    async def running(self, *, include_dead: bool = False) -> dict[str, set[str]]:
        """Machine ID -> the units with a running container there (a killed node's only with ``include_dead``)."""
        return {node.machine_id: await self.containers(node) for node in self.nodes if node.alive or include_dead}

    async def where(self, unit: str, *, include_dead: bool = False) -> list[str]:
        """The machines (IDs, in node order) where ``unit`` has a running container."""
        return [machine for machine, units in (await self.running(include_dead=include_dead)).items() if unit in units]

    async def placements(self) -> dict[str, str]:
        """The schedule as the engine wrote it: unit -> machine ID."""
        return {name: entry.machine_id for name, entry in (await self.registry.schedule()).entries.items()}


async def _holds(condition: Condition) -> bool:
    result = condition()
    return await result if isinstance(result, Awaitable) else result


def _record(machine_id: str, address: str, metadata: Mapping[str, str]) -> MachineRecord:
    return MachineRecord(machine_id, address, metadata=metadata)


@asynccontextmanager
async def memory_cluster(
    settings: GossipSettings | None = None, *, every_node_leads: bool = False, lease_ttl: float = DEFAULT_LEASE_TTL
) -> AsyncIterator[MemoryCluster]:
    """An empty cluster; add nodes with :meth:`MemoryCluster.add`. Everything is cancelled when the block ends."""
    clock = ManualClock()
    # The registry outlives the nodes' tasks, so that the engine's resignation on the way out still reaches it.
    async with MemoryRegistry(clock) as registry, MemoryNetwork() as network, anyio.create_task_group() as tg:
        yield MemoryCluster(
            clock,
            registry,
            network,
            tg,
            settings or GossipSettings(),
            every_node_leads=every_node_leads,
            lease_ttl=lease_ttl,
        )
        tg.cancel_scope.cancel()
