"""The gossiper: one member's side of the cluster's membership and unit-state dissemination.

Every ``interval`` the gossiper bumps its heartbeat (carried by its digests), judges the others' silence
(:mod:`fleetlet.cluster.membership`) and exchanges digests with ``fanout`` random live peers (three messages
each, :mod:`fleetlet.cluster.channel`), over connections it keeps open between rounds. Rounds run at a steady
pace whatever the peers do: an exchange is bounded by ``exchange_timeout`` and runs beside the rounds, and a peer
whose last exchange is still under way is skipped rather than waited for, so a stalled peer never delays this
member's own heartbeat. Dialing a peer is bounded apart, by ``dial_timeout``: a connection's handshake costs
several times an exchange, and one cancelled half-way is all cost and no link (on a loaded machine, cancelling
dials at the exchange's bound is how a cluster starting at once would never finish connecting). For the same
reason a member dials at most ``max_dials`` live peers at a time: a round that picks more peers it has no
connection to yet talks to peers it has one to instead, so a cluster booting at once connects at the pace its
machines can handshake, gossiping meanwhile, instead of piling up dials that all time out.

Beside the live peers, a round sometimes also dials one dead member (a healed partition or a restarted agent is
noticed without waiting for it to call) and one seed (a ``--join`` address: how a member with nobody left in its
view finds the cluster again), each with a chance that falls as the live view grows, as Cassandra's gossiper does.

Inbound connections reach the same gossiper as a :class:`~fleetlet.cluster.channel.Listener`: it admits the dialer
(refusing a second member with a live member's machine ID), answers ``syn`` and takes in ``ack2``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.clock import Clock, move_on_after
from fleetlet.cluster.channel import Dialer, Link
from fleetlet.cluster.detector import DetectorSettings
from fleetlet.cluster.errors import SELF, DuplicateMachineId, GossipRefused, PeerUnreachable, ProtocolError
from fleetlet.cluster.membership import PLACEABLE, Membership, MembershipEvent, MembershipSettings, Status
from fleetlet.cluster.records import LEFT_KEY, MACHINE_KEY, UNIT_PREFIX, MachineRecord, unit_state_key
from fleetlet.cluster.state import DEFAULT_MAX_ENTRIES, ClusterState, Delta, Update, Version
from fleetlet.cluster.wire import Ack, Ack2, Hello, Syn, Welcome

log = logging.getLogger("fleetlet.cluster")

LEAVE_TIMEOUT: Final = 2.0


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """The gossip's pace and the failure detector's tolerance; the defaults declare a stopped member dead in ~2 s."""

    interval: float = 0.2
    fanout: int = 3
    exchange_timeout: float = 1.0
    dial_timeout: float = 3.0
    max_dials: int = 1
    max_links: int = 12
    rotate_links: float = 5.0
    phi_suspect: float = 8.0
    min_std: float = 0.1
    acceptable_pause: float = 0.3
    suspect_timeout: float = 1.0
    forget_after: float = 60.0
    join_timeout: float = 5.0
    max_entries: int = DEFAULT_MAX_ENTRIES

    def __post_init__(self) -> None:
        timeouts = (self.exchange_timeout, self.dial_timeout, self.join_timeout, self.rotate_links)
        if self.interval <= 0 or self.fanout < 1 or self.max_dials < 1 or min(timeouts) <= 0:
            raise ValueError("interval, fanout, max_dials, timeouts and rotate_links must be positive")
        if self.max_links < self.fanout:
            raise ValueError("max_links must be at least fanout: a round talks to fanout connected peers")

    def membership(self) -> MembershipSettings:
        detector = DetectorSettings(self.interval, self.min_std, self.acceptable_pause)
        return MembershipSettings(detector, self.phi_suspect, self.suspect_timeout, self.forget_after)


# on_event(event): the view changed. on_unit_state(member, unit, state or None): a peer's unit state changed.
EventListener = Callable[[MembershipEvent], None]
UnitStateListener = Callable[[str, str, Any], None]


def _ignore_event(event: MembershipEvent) -> None:
    """Tell nobody."""


def _ignore_unit_state(member: str, unit: str, state: Any) -> None:
    """Tell nobody."""


class Gossiper:
    """This member in the cluster: start with ``await tg.start(gossiper.run)``, after :meth:`join` if it has seeds."""

    def __init__(
        self,
        record: MachineRecord,
        dialer: Dialer,
        clock: Clock,
        *,
        settings: GossipSettings | None = None,
        seeds: Sequence[str] = (),
        generation: int | None = None,
        rng: random.Random | None = None,
        on_event: EventListener = _ignore_event,
        on_unit_state: UnitStateListener = _ignore_unit_state,
    ) -> None:
        self.settings = settings or GossipSettings()
        self._dialer = dialer
        self._clock = clock
        self._seeds = [seed for seed in seeds if seed != record.address]
        self._rng = rng or random.Random()
        self._on_event = on_event
        self._on_unit_state = on_unit_state
        # Versions restart with the agent; the generation says which run they belong to (see cluster.state).
        self.generation = generation if generation is not None else int(clock.time() * 1_000_000)
        self.state = ClusterState(record.id, self.generation)
        self.state.set_local(MACHINE_KEY, record.to_value())
        self.membership = Membership(self.state, record, self.settings.membership(), clock.monotonic())
        self._links: dict[str, Link] = {}
        self._busy: set[str] = set()
        self._dialing: set[str] = set()
        self._claimed: set[int] = set()  # generations of other agents seen gossiping under this ID
        self.rounds = 0

    @property
    def id(self) -> str:
        return self.state.local_id

    @property
    def record(self) -> MachineRecord:
        return self.membership.local

    @property
    def connected(self) -> frozenset[str]:
        """The peers this member holds a connection to that it dialed: at most ``max_links``, give or take a dead
        member that answered when tried again (until a rotation closes a link)."""
        return frozenset(self._links)

    # --- what this member says of itself -------------------------------------------------------------------------

    def set_record(self, record: MachineRecord) -> None:
        """This member's record changed (its metadata, say): the next exchanges spread it."""
        if record.id != self.id:
            raise ValueError("a member's ID does not change")
        self.membership.set_local(record)
        self.state.set_local(MACHINE_KEY, record.to_value())

    def set_unit_state(self, unit: str, state: Any) -> None:
        """Publish the state of one of this member's units (a JSON object), or None once it is gone from here."""
        self.state.set_local(unit_state_key(unit), state)

    # --- what the cluster says -------------------------------------------------------------------------------------

    def placeable(self) -> list[MachineRecord]:
        """The members units may be placed on (alive or suspect), this one included."""
        return self.membership.placeable()

    def unit_states(self, statuses: frozenset[Status] = PLACEABLE) -> Iterator[tuple[str, str, Any]]:
        """``(member, unit, state)`` of every unit state published by a member in ``statuses``."""
        for record, status in self.membership.members():
            member = self.state.get(record.id)
            if status not in statuses or member is None:
                continue
            for key, entry in member.entries.items():
                if key.startswith(UNIT_PREFIX) and entry.value is not None:
                    yield record.id, key[len(UNIT_PREFIX) :], entry.value

    # --- joining, running, leaving ---------------------------------------------------------------------------------

    @property
    def seeds(self) -> tuple[str, ...]:
        """The members to join through that have not answered yet."""
        return tuple(self._seeds)

    def add_seeds(self, addresses: Sequence[str]) -> None:
        """More members to join through (found in etcd's member directory, say), after the ones given at start."""
        for address in addresses:
            if address != self.record.address and address not in self._seeds:
                self._seeds.append(address)

    async def join(self) -> bool:
        """Exchange with the seeds in turn until one answers; False when none did within ``join_timeout``.

        Raises DuplicateMachineId or another GossipRefused (a wrong cluster key): a member the cluster refuses
        must not run as if it had joined.
        """
        async with move_on_after(self._clock, self.settings.join_timeout):
            for seed in list(self._seeds):
                try:
                    await self._exchange_with(seed)
                except (PeerUnreachable, ProtocolError) as exc:
                    log.warning("cannot join through %s: %s", seed, exc)
                    continue
                except GossipRefused as exc:
                    if exc.code == SELF:
                        self._seeds.remove(seed)
                        continue
                    raise
                log.info("joined the cluster through %s", seed)
                return True
        return False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Gossip every ``interval`` until cancelled; connections close on the way out."""
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                while True:
                    self._round(tg)
                    await self._clock.sleep(self.settings.interval)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close every connection this member dialed (``run`` does on its way out; a member that only joined, or
        left, without running must do it itself)."""
        with anyio.CancelScope(shield=True):
            await self._close_links()

    async def leave(self) -> None:
        """Say this member is leaving, to a few peers at once (the rest hear it by gossip, or by silence)."""
        self.state.set_local(LEFT_KEY, True)
        targets = self._targets()
        async with move_on_after(self._clock, LEAVE_TIMEOUT), anyio.create_task_group() as tg:
            for address in targets:
                tg.start_soon(self._exchange, address)

    def _round(self, tg: TaskGroup) -> None:
        self.rounds += 1
        self.state.beat()
        self._emit(self.membership.tick(self._clock.monotonic()))
        self._rotate(tg)
        for address in self._targets():
            self._busy.add(address)
            tg.start_soon(self._exchange, address)

    def _rotate(self, tg: TaskGroup) -> None:
        """At the cap, now and then close one idle link, so that a later round dials a fresh peer in its place.

        The links a member keeps are a random graph, which is what carries every change to everyone in a few
        rounds; left alone it would freeze into the first peers each member happened to dial.
        """
        settings = self.settings
        if len(self._links) < settings.max_links or self._rng.random() >= settings.interval / settings.rotate_links:
            return
        idle = [address for address in self._links if address not in self._busy]
        if idle:
            address = self._rng.choice(idle)
            self._busy.add(address)  # not picked while it closes
            tg.start_soon(self._retire, address)

    async def _retire(self, address: str) -> None:
        try:
            await self._drop(address)
        finally:
            self._busy.discard(address)

    def _targets(self) -> list[str]:
        live: list[str] = []
        dead: list[str] = []
        for record, status in self.membership.members():
            if record.id == self.id or record.address in self._busy:
                continue
            if status in PLACEABLE:
                live.append(record.address)
            elif status is Status.DEAD:
                dead.append(record.address)
        rng = self._rng
        targets = self._within_dials(rng.sample(live, min(self.settings.fanout, len(live))), live)
        if dead and rng.random() < len(dead) / (len(live) + 1):
            targets.append(rng.choice(dead))
        seeds = [seed for seed in self._seeds if seed not in self._busy]
        if seeds and (not live or rng.random() < 1 / (len(live) + 1)):
            seed = rng.choice(seeds)
            # A seed is a way back into the cluster: always when nobody else is known, else within the links' cap.
            links = self._links
            dials = len(self._dialing) + sum(1 for address in targets if address not in links)
            if not live or seed in links or len(links) + dials < self.settings.max_links:
                targets.append(seed)
        return list(dict.fromkeys(targets))

    def _within_dials(self, picked: list[str], live: list[str]) -> list[str]:
        """The picked peers, those beyond the dials allowed replaced by peers already connected (if any).

        Dials allowed: ``max_dials`` at a time, and none past ``max_links`` connections. Without that cap every
        member would in time hold a connection to every other (two per pair, one dialed each way), at the cost of
        a handshake each and a socket each; a few random links per member carry gossip as far in as few rounds.
        """
        links = self._links
        dials = len(self._dialing)
        budget = min(self.settings.max_dials, self.settings.max_links - len(links)) - dials
        if sum(1 for address in picked if address not in links) <= budget:
            return picked
        spare = [address for address in live if address in links and address not in picked]
        targets: list[str] = []
        for address in picked:
            if address in links:
                targets.append(address)
            elif budget > 0:
                budget -= 1
                targets.append(address)
            elif spare:
                targets.append(spare.pop(self._rng.randrange(len(spare))))
        return targets

    async def _exchange(self, address: str) -> None:
        self._busy.add(address)
        try:
            if address not in self._links:
                self._dialing.add(address)
                async with move_on_after(self._clock, self.settings.dial_timeout) as dialing:
                    await self._link(address)
                if dialing.expired:
                    log.debug("dialing %s timed out", address)
                    return
                self._dialing.discard(address)
            async with move_on_after(self._clock, self.settings.exchange_timeout) as deadline:
                await self._exchange_with(address)
            if deadline.expired:
                log.debug("gossip with %s timed out", address)
                await self._drop(address)
        except (PeerUnreachable, ProtocolError) as exc:
            log.debug("gossip with %s failed: %s", address, exc)
        except GossipRefused as exc:
            if exc.code == SELF:
                if address in self._seeds:
                    self._seeds.remove(address)
            else:
                log.error("%s refused this member: %s", address, exc)
        finally:
            self._busy.discard(address)
            self._dialing.discard(address)

    async def _link(self, address: str) -> Link:
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = await self._dialer.dial(address, self._hello())
        return link

    async def _exchange_with(self, address: str) -> None:
        """One exchange: syn, ack, ack2; a broken link is dropped, for the next round to dial again.

        An ack2 with no deltas is not sent: the listener has nothing to take from it, and in a cluster at rest
        (heartbeats travel in the digests) that is most exchanges, a third of their messages.
        """
        try:
            link = await self._link(address)
            ack = await link.exchange(Syn(self.state.digest()))
            self._take(ack.deltas)
            self._beats(ack.digest)
            deltas = self.state.deltas_for(ack.digest, max_entries=self.settings.max_entries)
            if deltas:
                await link.finish(Ack2(deltas))
        except BaseException:
            await self._drop(address)
            raise

    async def _drop(self, address: str) -> None:
        link = self._links.pop(address, None)
        if link is not None:
            with anyio.CancelScope(shield=True):
                await link.aclose()

    async def _close_links(self) -> None:
        for address in list(self._links):
            await self._drop(address)

    def _hello(self) -> Hello:
        record = self.record
        return Hello(record.id, self.generation, record.address, version=record.version)

    # --- the Listener side -----------------------------------------------------------------------------------------

    def admit(self, hello: Hello) -> Welcome:
        """Refuse this member itself and a second member under a live member's ID; welcome anyone else."""
        if hello.id == self.id:
            if hello.generation == self.generation:
                raise GossipRefused(SELF, "that is this member itself")
            raise DuplicateMachineId(
                hello.id, f"machine ID {hello.id} is already used by the member at {self.record.address}"
            )
        known = self.membership.record(hello.id)
        status = self.membership.status(hello.id)
        if known is not None and status is Status.ALIVE and known.address != hello.address:
            member = self.state.get(hello.id)
            if member is None or member.generation != hello.generation:
                raise DuplicateMachineId(
                    hello.id, f"machine ID {hello.id} is already used by the live member at {known.address}"
                )
        return Welcome(self.id, self.generation)

    def on_syn(self, syn: Syn) -> Ack:
        self._beats(syn.digest)
        deltas = self.state.deltas_for(syn.digest, max_entries=self.settings.max_entries)
        return Ack(self.state.digest(), deltas)

    def on_ack2(self, ack2: Ack2) -> None:
        self._take(ack2.deltas)

    # --- taking in what peers say ----------------------------------------------------------------------------------

    def _take(self, deltas: Sequence[Delta]) -> None:
        claimed = self.state.claims_local(deltas)
        if claimed is not None and claimed not in self._claimed:
            self._claimed.add(claimed)
            log.error("another agent gossips under this machine's ID %s (generation %d): two agents share it",
                      self.id, claimed)  # fmt: skip
        resets, updates = self.state.apply(deltas)
        if not resets and not updates:
            return
        self._emit(self.membership.observe(resets, updates, self._clock.monotonic()))
        for update in updates:
            self._tell_unit_state(update)

    def _beats(self, digest: Mapping[str, Version]) -> None:
        beating = self.state.take_heartbeats(digest)
        if beating:
            self._emit(self.membership.heartbeats(beating, self._clock.monotonic()))

    def _tell_unit_state(self, update: Update) -> None:
        if update.key.startswith(UNIT_PREFIX):
            self._on_unit_state(update.member, update.key[len(UNIT_PREFIX) :], update.value)

    def _emit(self, events: list[MembershipEvent]) -> None:
        for event in events:
            level = logging.WARNING if event.type in ("suspect", "dead") else logging.INFO
            log.log(level, "machine %s %s: %s", event.member[:8], event.type, event.reason)
            self._on_event(event)
