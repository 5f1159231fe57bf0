"""Gossip members on the in-memory network and a ManualClock: joining, spreading, failure detection, refusals.

No sleeps: ``rounds(n)`` advances the clock one gossip interval at a time and lets every task run until blocked,
so each assertion is about an exact number of rounds of virtual time.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from fleetlet.clock import ManualClock
from fleetlet.cluster.channel import Link
from fleetlet.cluster.errors import DuplicateMachineId, GossipRefused
from fleetlet.cluster.gossiper import Gossiper, GossipSettings
from fleetlet.cluster.membership import MembershipEvent, Status
from fleetlet.cluster.memory_network import MemoryNetwork
from fleetlet.cluster.records import MachineRecord
from fleetlet.cluster.wire import Hello

SETTINGS = GossipSettings()
KEY = b"k" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Member:
    gossiper: Gossiper
    scope: anyio.CancelScope
    events: list[MembershipEvent] = field(default_factory=list)
    unit_states: list[tuple[str, str, Any]] = field(default_factory=list)

    def seen(self, kind: str) -> list[str]:
        return [event.member for event in self.events if event.type == kind]


@dataclass
class Rig:
    clock: ManualClock
    network: MemoryNetwork
    tg: TaskGroup
    members: dict[str, Member] = field(default_factory=dict)
    seed: int = 0
    settings: GossipSettings = SETTINGS

    async def start(
        self,
        machine_id: str,
        *,
        seeds: tuple[str, ...] = ("mem://a",),
        key: bytes | None = None,
        address: str | None = None,
        metadata: dict[str, str] | None = None,
        join: bool = True,
    ) -> Member:
        address = address or f"mem://{machine_id}"
        record = MachineRecord(machine_id, address, metadata=metadata or {})
        events: list[MembershipEvent] = []
        states: list[tuple[str, str, Any]] = []
        self.seed += 1
        gossiper = Gossiper(
            record,
            self.network.dialer(address, key),
            self.clock,
            settings=self.settings,
            seeds=seeds,
            generation=int(self.clock.monotonic() * 1000) + self.seed,
            rng=random.Random(self.seed),
            on_event=events.append,
            on_unit_state=lambda member, unit, state: states.append((member, unit, state)),
        )
        self.network.attach(address, gossiper, key)
        if join:
            await gossiper.join()
        scope = anyio.CancelScope()

        async def run(*, task_status: Any) -> None:
            with scope:
                await gossiper.run(task_status=task_status)

        await self.tg.start(run)
        member = Member(gossiper, scope, events, states)
        self.members[address] = member
        return member

    def kill(self, member: Member) -> None:
        """As kill -9: gone from the network at once, no goodbye."""
        self.network.detach(member.gossiper.record.address)
        member.scope.cancel()

    async def rounds(self, n: int) -> None:
        for _ in range(n):
            self.clock.advance(SETTINGS.interval)
            await self.clock.settle()


@asynccontextmanager
async def cluster(settings: GossipSettings = SETTINGS) -> AsyncIterator[Rig]:
    clock = ManualClock()
    async with MemoryNetwork() as network, anyio.create_task_group() as tg:
        rig = Rig(clock, network, tg, settings=settings)
        yield rig
        tg.cancel_scope.cancel()


def view(member: Member) -> dict[str, Status]:
    return {record.id: status for record, status in member.gossiper.membership.members()}


@pytest.mark.anyio
async def test_members_joining_through_one_seed_all_see_each_other() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        b = await rig.start("b")
        c = await rig.start("c")
        assert "a" in view(b)  # joining is one exchange with the seed
        await rig.rounds(3)
        for member in (a, b, c):
            assert view(member) == {"a": Status.ALIVE, "b": Status.ALIVE, "c": Status.ALIVE}
        assert sorted(a.seen("joined")) == ["b", "c"]
        assert sorted(c.seen("joined")) == ["a", "b"]


@pytest.mark.anyio
async def test_a_metadata_change_spreads_as_one_event_per_member() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=(), metadata={"zone": "z1"})
        b = await rig.start("b")
        c = await rig.start("c")
        await rig.rounds(3)
        a.gossiper.set_record(MachineRecord("a", "mem://a", metadata={"zone": "z2"}))
        await rig.rounds(3)
        for member in (b, c):
            assert member.seen("metadata-changed") == ["a"]
            record = member.gossiper.membership.record("a")
            assert record is not None
            assert dict(record.metadata) == {"zone": "z2"}


@pytest.mark.anyio
async def test_a_killed_member_is_suspect_then_dead_then_removed_and_no_longer_placeable() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        b = await rig.start("b")
        c = await rig.start("c")
        await rig.rounds(20)  # enough heartbeats for the detector to know their pace
        rig.kill(c)
        killed_at = rig.clock.monotonic()
        dead_at: dict[str, float] = {}
        while len(dead_at) < 2:
            await rig.rounds(1)
            for name, member in (("a", a), ("b", b)):
                if "c" in member.seen("dead") and name not in dead_at:
                    dead_at[name] = rig.clock.monotonic() - killed_at
            assert rig.clock.monotonic() - killed_at < 10, "never declared dead"
        for member in (a, b):
            assert member.seen("suspect") == ["c"]
            assert [r.id for r in member.gossiper.placeable()] == sorted(
                ["a", "b"], key=lambda x: x != member.gossiper.id
            )
        # Defaults: suspect after about a second of silence, dead one suspect_timeout later.
        assert all(1.6 <= t <= 2.6 for t in dead_at.values()), dead_at
        await rig.rounds(int(SETTINGS.forget_after / SETTINGS.interval) + 1)
        for member in (a, b):
            assert member.seen("removed") == ["c"]
            assert "c" not in view(member)
            assert "c" not in member.gossiper.state.digest()


@pytest.mark.anyio
async def test_a_partition_makes_a_member_suspect_and_healing_refutes_it() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        await rig.start("b")
        await rig.rounds(20)
        rig.network.partition("mem://a", "mem://b")
        for _ in range(20):
            await rig.rounds(1)
            if "b" in a.seen("suspect"):
                break
        assert view(a)["b"] is Status.SUSPECT
        rig.network.partition("mem://a", "mem://b", cut=False)
        await rig.rounds(2)
        assert view(a)["b"] is Status.ALIVE
        assert a.seen("alive") == ["b"]
        assert a.seen("dead") == []


@pytest.mark.anyio
async def test_a_dead_member_that_restarts_joins_again_with_a_new_generation() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        b = await rig.start("b")
        await rig.rounds(20)
        rig.kill(b)
        await rig.rounds(20)
        assert view(a)["b"] is Status.DEAD
        restarted = await rig.start("b")
        await rig.rounds(2)
        assert view(a)["b"] is Status.ALIVE
        assert a.seen("joined") == ["b", "b"]
        state = a.gossiper.state.get("b")
        assert state is not None
        assert state.generation == restarted.gossiper.generation


@pytest.mark.anyio
async def test_a_member_that_leaves_is_left_at_once_not_suspected() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        b = await rig.start("b")
        c = await rig.start("c")
        await rig.rounds(5)
        await c.gossiper.leave()
        rig.kill(c)
        await rig.rounds(3)
        for member in (a, b):
            assert view(member)["c"] is Status.LEFT
            assert member.seen("left") == ["c"]
            assert member.seen("suspect") == []
            assert "c" not in [r.id for r in member.gossiper.placeable()]


@pytest.mark.anyio
async def test_unit_states_spread_and_tombstones_remove_them() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        b = await rig.start("b")
        await rig.rounds(2)
        a.gossiper.set_unit_state("hello.service", {"active": "active", "sub": "running"})
        await rig.rounds(2)
        assert b.unit_states == [("a", "hello.service", {"active": "active", "sub": "running"})]
        assert list(b.gossiper.unit_states()) == [("a", "hello.service", {"active": "active", "sub": "running"})]
        a.gossiper.set_unit_state("hello.service", None)
        await rig.rounds(2)
        assert b.unit_states[-1] == ("a", "hello.service", None)
        assert list(b.gossiper.unit_states()) == []


@pytest.mark.anyio
async def test_a_second_member_with_a_live_members_id_is_refused_on_both_sides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "fleetlet.cluster")
    async with cluster() as rig:
        await rig.start("a", seeds=())
        b = await rig.start("b")
        await rig.rounds(5)
        with pytest.raises(DuplicateMachineId, match="already used by the live member at mem://b") as refused:
            await rig.start("b", address="mem://b2")
        assert refused.value.machine_id == "b"
        assert any("refused gossip from machine b at mem://b2" in r.getMessage() for r in caplog.records)
        assert view(b)["b"] is Status.ALIVE


@pytest.mark.anyio
async def test_a_member_with_its_own_id_at_the_seed_itself_is_refused() -> None:
    async with cluster() as rig:
        await rig.start("a", seeds=())
        with pytest.raises(DuplicateMachineId, match="machine ID a is already used by the member at mem://a"):
            await rig.start("a", address="mem://a2")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("joiner_key", "code"), [(None, "no-key"), (b"w" * 32, "bad-key")], ids=["without-key", "wrong-key"]
)
async def test_the_cluster_key_keeps_out_a_peer_that_cannot_prove_it(
    joiner_key: bytes | None, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "fleetlet.cluster")
    async with cluster() as rig:
        a = await rig.start("a", seeds=(), key=KEY)
        good = await rig.start("b", key=KEY)
        assert "a" in view(good)
        with pytest.raises(GossipRefused) as refused:
            await rig.start("c", key=joiner_key)
        await rig.rounds(5)
        assert "c" not in view(a)
        assert refused.value.code == code
        # The member with the right key logs the failed connection too, whichever side spoke first.
        assert any("machine c at mem://c" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.anyio
async def test_fifty_members_converge_within_a_few_rounds_of_a_change() -> None:
    async with cluster() as rig:
        members = [await rig.start("m00", seeds=())]
        for i in range(1, 50):
            members.append(await rig.start(f"m{i:02d}", seeds=("mem://m00",)))
        await rig.rounds(10)
        assert all(len(view(m)) == 50 for m in members)
        members[17].gossiper.set_record(MachineRecord("m17", "mem://m17", metadata={"disk": "ssd"}))
        spent = 0
        while not all(m.seen("metadata-changed") == ["m17"] for m in members if m is not members[17]):
            assert spent < 6, f"not everywhere after {spent} rounds"
            await rig.rounds(1)
            spent += 1


@pytest.mark.anyio
async def test_an_exchange_with_nothing_for_the_listener_sends_no_ack2() -> None:
    async with cluster() as rig:
        await rig.start("a", seeds=())
        await rig.start("b")
        await rig.rounds(5)
        before = rig.network.messages
        await rig.rounds(10)
        # Each round each member has one peer: a syn and an ack each, nothing else (heartbeats ride the digests).
        assert rig.network.messages - before == 10 * 2 * 2


@pytest.mark.anyio
async def test_a_member_dials_one_new_peer_at_a_time_and_gossips_with_connected_ones_meanwhile() -> None:
    async with cluster() as rig:
        members = [await rig.start("m0", seeds=())]
        for i in range(1, 8):
            members.append(await rig.start(f"m{i}", seeds=("mem://m0",)))
        connections = rig.network.connections
        for _ in range(12):
            messages = rig.network.messages
            await rig.rounds(1)
            assert rig.network.connections - connections <= len(members)  # at most one dial each
            assert rig.network.messages - messages >= 2 * 3 * len(members)  # yet three exchanges each
            connections = rig.network.connections
        assert all(len(view(m)) == 8 and set(view(m).values()) == {Status.ALIVE} for m in members)


class SlowDialer:
    """Connections that take ``seconds`` of the clock to open, as on a loaded machine; ``attempts`` counts dials."""

    def __init__(self, network: MemoryNetwork, address: str, clock: ManualClock, seconds: float) -> None:
        self._inner = network.dialer(address)
        self._clock, self._seconds = clock, seconds
        self.attempts = 0

    async def dial(self, address: str, hello: Hello) -> Link:
        self.attempts += 1
        await self._clock.sleep(self._seconds)
        return await self._inner.dial(address, hello)


@pytest.mark.anyio
async def test_a_dial_slower_than_an_exchange_may_take_still_connects() -> None:
    async with cluster() as rig:
        a = await rig.start("a", seeds=())
        slow = 1.5  # beyond exchange_timeout, within dial_timeout
        assert SETTINGS.exchange_timeout < slow < SETTINGS.dial_timeout
        dialer = SlowDialer(rig.network, "mem://b", rig.clock, slow)
        b = Gossiper(MachineRecord("b", "mem://b"), dialer, rig.clock, settings=SETTINGS, seeds=("mem://a",),
                     generation=1, rng=random.Random(1))  # fmt: skip
        rig.network.attach("mem://b", b)
        rig.tg.start_soon(b.run)
        await rig.rounds(int(slow / SETTINGS.interval) + 2)
        assert dialer.attempts == 1
        assert b.membership.status("a") is Status.ALIVE
        assert a.gossiper.membership.status("b") is Status.ALIVE


@pytest.mark.anyio
async def test_a_dial_that_never_ends_is_given_up_after_dial_timeout() -> None:
    async with cluster() as rig:
        await rig.start("a", seeds=())
        dialer = SlowDialer(rig.network, "mem://b", rig.clock, math.inf)
        b = Gossiper(MachineRecord("b", "mem://b"), dialer, rig.clock, settings=SETTINGS, seeds=("mem://a",),
                     generation=1, rng=random.Random(1))  # fmt: skip
        rig.tg.start_soon(b.run)  # its first round, at 0.2 s, dials its seed
        await rig.rounds(round(SETTINGS.dial_timeout / SETTINGS.interval))
        assert dialer.attempts == 1  # 3 s: still dialing, and the seed is busy meanwhile
        await rig.rounds(2)
        assert dialer.attempts == 2  # given up at 3.2 s, and dialed again by the next round
        assert rig.network.connections == 0


@pytest.mark.anyio
async def test_a_member_keeps_at_most_max_links_connections_rotates_them_and_changes_still_spread() -> None:
    capped = GossipSettings(max_links=4, fanout=2)
    async with cluster(capped) as rig:
        members = [await rig.start("m00", seeds=())]
        for i in range(1, 30):
            members.append(await rig.start(f"m{i:02d}", seeds=("mem://m00",)))
        await rig.rounds(20)
        assert all(len(view(m)) == 30 and set(view(m).values()) == {Status.ALIVE} for m in members)
        assert max(len(m.gossiper.connected) for m in members) <= 4
        assert rig.network.connections < 30 * 29 / 4  # dials so far, joins and rotations included: not the mesh
        before = {m.gossiper.id: m.gossiper.connected for m in members}
        members[11].gossiper.set_record(MachineRecord("m11", "mem://m11", metadata={"disk": "ssd"}))
        spent = 0
        while not all(m.seen("metadata-changed") == ["m11"] for m in members if m is not members[11]):
            assert spent < 8, f"not everywhere after {spent} rounds"
            await rig.rounds(1)
            spent += 1
        await rig.rounds(round(3 * capped.rotate_links / capped.interval))
        assert max(len(m.gossiper.connected) for m in members) <= 4
        rotated = sum(1 for m in members if m.gossiper.connected != before[m.gossiper.id])
        assert rotated > 20, f"only {rotated} of 30 members changed a link in {3 * capped.rotate_links:g} s"
        assert all(set(view(m).values()) == {Status.ALIVE} for m in members)  # nobody suspected meanwhile


@pytest.mark.parametrize("bad", [{"dial_timeout": 0}, {"max_dials": 0}, {"exchange_timeout": -1}])
def test_gossip_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        GossipSettings(**bad)


def test_max_links_below_fanout_is_refused() -> None:
    with pytest.raises(ValueError, match="max_links"):
        GossipSettings(fanout=3, max_links=2)
