"""The cluster's logic end to end, in memory: gossip, the engine, the reconcilers and the supervisors together.

The same scenarios as ``tests/integration/test_cluster_agents.py`` (real agent processes), here on one
ManualClock (:mod:`tests.unit.memory_cluster`): no sleeps, the same interleaving on every run, and times asserted
in virtual seconds. What runs where is read off each machine's fake container runtime, so a unit that the schedule
moved but an agent kept running counts as running twice.
"""

from __future__ import annotations

from collections import Counter

import pytest

from fleetlet.cluster.gossiper import GossipSettings
from fleetlet.cluster.membership import Status
from fleetlet.engine.engine import DEFAULT_SETTLE
from fleetlet.exec.runtime import LABEL_UNIT
from tests.unit.memory_cluster import ClusterNode, MemoryCluster, memory_cluster, unit_text

pytestmark = pytest.mark.anyio

SETTINGS = GossipSettings()
# The target: a killed machine's units run elsewhere within 5 s.
RESCHEDULE_TARGET = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def start(cluster: MemoryCluster, *metadata: dict[str, str]) -> list[ClusterNode]:
    """Add machines with these metadata and wait until every node sees every other alive."""
    nodes = [await cluster.add(m) for m in metadata]
    await converged(cluster)
    return nodes


async def converged(cluster: MemoryCluster) -> None:
    live = {node.machine_id for node in cluster.nodes if node.alive}

    def everyone_sees_everyone() -> bool:
        return all(
            {m for m, status in node.view().items() if status is Status.ALIVE} >= live
            for node in cluster.nodes
            if node.alive
        )

    await cluster.until(everyone_sees_everyone, within=3.0)


async def single_runs(cluster: MemoryCluster, *, include_dead: bool = False) -> dict[str, str]:
    """Unit -> the one machine running it; fails if any unit runs on two machines."""
    running = await cluster.running(include_dead=include_dead)
    twice = sorted(unit for unit, count in Counter(u for units in running.values() for u in units).items() if count > 1)
    assert twice == [], f"running on more than one machine: {twice}"
    return {unit: machine for machine, units in (await cluster.running(include_dead=include_dead)).items()
            for unit in units}  # fmt: skip


async def test_units_with_machine_metadata_land_only_where_it_matches() -> None:
    async with memory_cluster() as cluster:
        a, b, c = await start(
            cluster, {"zone": "a", "disk": "ssd"}, {"zone": "b", "disk": "hdd"}, {"zone": "c", "disk": "ssd"}
        )
        await cluster.submit("ssd-c.service", unit_text("MachineMetadata=disk=ssd\nMachineMetadata=zone=c"))
        await cluster.submit("hdd.service", unit_text("MachineMetadata=disk=hdd"))
        await cluster.submit("ab.service", unit_text("MachineMetadata=zone=a\nMachineMetadata=zone=b"))
        await cluster.submit("gpu.service", unit_text("MachineMetadata=gpu=yes"))
        await cluster.advance(0.5)

        runs = await single_runs(cluster)
        assert runs["ssd-c.service"] == c.machine_id  # both keys must match: only c is ssd in zone c
        assert runs["hdd.service"] == b.machine_id
        assert runs["ab.service"] in (a.machine_id, b.machine_id)  # values of one key: either will do
        assert "gpu.service" not in runs
        assert cluster.engine.unplaceable == {
            "gpu.service": tuple(f"machine {n.short_id}: metadata gpu=yes not satisfied" for n in (a, b, c))
        }
        assert cluster.loaded(c) == {"ssd-c.service": "active/running"}


async def test_ten_conflicting_instances_over_three_machines_one_each_and_seven_wait_with_reasons() -> None:
    async with memory_cluster() as cluster:
        nodes = await start(cluster, {}, {}, {})
        instances = [f"hello@{i}.service" for i in range(1, 11)]
        for name in instances:
            await cluster.submit(name, unit_text("Conflicts=hello@*"))
        await cluster.advance(0.5)

        running = await cluster.running()
        assert [len(running[n.machine_id]) for n in nodes] == [1, 1, 1]
        placed = {unit for units in running.values() for unit in units}
        assert set((await cluster.placements()).keys()) == placed
        waiting = sorted(set(instances) - placed)
        assert len(waiting) == 7
        reasons = cluster.engine.unplaceable
        assert sorted(reasons) == waiting
        by_machine = {machine: next(iter(units)) for machine, units in running.items()}
        for name in waiting:  # each machine is refused for the instance it runs
            assert reasons[name] == tuple(
                f"machine {n.short_id}: conflicts with {by_machine[n.machine_id]}" for n in nodes
            )
        assert cluster.unplaceable_reports[-1] == reasons  # what the event stream's placement feed hears


async def test_machine_of_pairs_stay_together_and_move_together_when_their_machine_dies() -> None:
    async with memory_cluster() as cluster:
        a, b, c = await start(cluster, {"zone": "a"}, {"zone": "b"}, {"zone": "c"})
        await cluster.submit("leader.service", unit_text("MachineMetadata=zone=b\nMachineMetadata=zone=c"))
        await cluster.submit("follower.service", unit_text("MachineOf=leader.service"))
        await cluster.advance(0.5)
        runs = await single_runs(cluster)
        first = runs["leader.service"]
        assert runs["follower.service"] == first
        assert first in (b.machine_id, c.machine_id)

        victim, survivor = (b, c) if first == b.machine_id else (c, b)
        cluster.kill(victim)

        async def together() -> bool:
            return await cluster.where("follower.service") == await cluster.where("leader.service")

        async def both_on_survivor() -> bool:
            return await cluster.containers(survivor) >= {"leader.service", "follower.service"}

        took = await cluster.until(both_on_survivor, within=RESCHEDULE_TARGET, each_step=together)
        assert took < RESCHEDULE_TARGET
        assert await cluster.placements() == {
            "leader.service": survivor.machine_id,
            "follower.service": survivor.machine_id,
        }
        assert a.machine_id not in await cluster.where("leader.service")


async def placed_on_b_or_c(cluster: MemoryCluster) -> tuple[ClusterNode, ClusterNode, ClusterNode]:
    """Three zones; ``moved.service`` may run in zone b or c and ``pinned.service`` only where ``moved`` went.

    Returns the server (zone a, never eligible), the machine running both units, and the other one.
    """
    a, b, c = await start(cluster, {"zone": "a"}, {"zone": "b"}, {"zone": "c"})
    await cluster.submit("moved.service", unit_text("MachineMetadata=zone=b\nMachineMetadata=zone=c"))
    await cluster.advance(0.5)
    first = await cluster.where("moved.service")
    victim, survivor = (b, c) if first == [b.machine_id] else (c, b)
    await cluster.submit("pinned.service", unit_text(f"MachineMetadata=zone={victim.metadata['zone']}"))
    await cluster.advance(0.5)
    assert await single_runs(cluster) == {"moved.service": victim.machine_id, "pinned.service": victim.machine_id}
    return a, victim, survivor


async def test_a_killed_machine_s_units_run_elsewhere_within_the_target_honouring_constraints() -> None:
    async with memory_cluster() as cluster:
        a, victim, survivor = await placed_on_b_or_c(cluster)
        killed_at = cluster.clock.monotonic()
        cluster.kill(victim)

        # Suspect first: a machine that only missed a few heartbeats keeps its units.
        await cluster.until(lambda: a.view()[victim.machine_id] is Status.SUSPECT, within=RESCHEDULE_TARGET)
        assert (await cluster.placements())["moved.service"] == victim.machine_id

        async def moved() -> bool:
            return await cluster.where("moved.service") == [survivor.machine_id]

        await cluster.until(moved, within=RESCHEDULE_TARGET)
        took = round(cluster.clock.monotonic() - killed_at, 6)
        suspect, dead = a.heard("suspect", victim) - killed_at, a.heard("dead", victim) - killed_at
        # With the default settings: suspect at the first round where phi >= 8, dead one suspect_timeout later
        # (on a round), and the engine's settle time after that the unit runs on the survivor.
        assert suspect == pytest.approx(1.2)
        assert dead == pytest.approx(suspect + SETTINGS.suspect_timeout)
        assert took == pytest.approx(dead + DEFAULT_SETTLE)
        assert took < RESCHEDULE_TARGET
        # pinned.service could only run in the dead machine's zone: it waits, and says why.
        assert await cluster.placements() == {"moved.service": survivor.machine_id}
        assert cluster.engine.unplaceable == {
            "pinned.service": tuple(
                f"machine {n.short_id}: metadata zone={victim.metadata['zone']} not satisfied" for n in (a, survivor)
            )
        }
        # The killed agent's containers were not stopped by anybody: the machine is unreachable, not wiped.
        assert await cluster.containers(victim) == {"moved.service", "pinned.service"}


async def test_a_killed_machine_that_comes_back_runs_only_what_is_placed_on_it_now() -> None:
    async with memory_cluster() as cluster:
        a, victim, survivor = await placed_on_b_or_c(cluster)
        before = await cluster.container_ids(victim)
        cluster.kill(victim)

        async def moved() -> bool:
            return await cluster.where("moved.service") == [survivor.machine_id]

        await cluster.until(moved, within=RESCHEDULE_TARGET)
        await cluster.restart(victim)
        assert victim.starts == 2
        await converged(cluster)

        async def pinned_back() -> bool:
            return await cluster.where("pinned.service") == [victim.machine_id]

        await cluster.until(pinned_back, within=2.0)
        await cluster.advance(2.0)  # and it stays that way
        assert await single_runs(cluster) == {
            "moved.service": survivor.machine_id,
            "pinned.service": victim.machine_id,
        }
        assert cluster.loaded(victim) == {"pinned.service": "active/running"}
        # Neither unit was placed on it when it started: both containers the killed agent left were swept, and
        # pinned.service started afresh once the engine placed it there again.
        assert before["pinned.service"] not in (await cluster.container_ids(victim)).values()
        assert created(victim) == ["moved.service", "pinned.service", "pinned.service"]
        assert sorted(call.args[0] for call in victim.runtime.called("remove")) == sorted(before.values())
        assert await cluster.placements() == {
            "moved.service": survivor.machine_id,
            "pinned.service": victim.machine_id,
        }
        assert a.view()[victim.machine_id] is Status.ALIVE


async def test_an_agent_restarted_before_it_is_declared_dead_adopts_its_containers_and_nothing_moves() -> None:
    async with memory_cluster() as cluster:
        a, victim, _ = await placed_on_b_or_c(cluster)
        before = await cluster.container_ids(victim)
        cluster.kill(victim)
        await cluster.advance(0.5)  # less than the detector needs to suspect it
        assert a.view()[victim.machine_id] is Status.ALIVE
        await cluster.restart(victim)
        await converged(cluster)
        await cluster.advance(RESCHEDULE_TARGET)

        assert await cluster.container_ids(victim) == before  # the same containers, adopted
        assert created(victim) == ["moved.service", "pinned.service"]
        assert victim.runtime.called("remove") == []
        assert await single_runs(cluster) == {"moved.service": victim.machine_id, "pinned.service": victim.machine_id}
        assert cluster.loaded(victim) == {"moved.service": "active/running", "pinned.service": "active/running"}
        assert [event.type for _, event in a.events if event.member == victim.machine_id] == ["joined"]


def created(node: ClusterNode) -> list[str]:
    """The units the node's runtime created containers for, in order."""
    return [call.args[0]["Labels"][LABEL_UNIT] for call in node.runtime.called("create")]


async def test_a_global_unit_runs_on_every_matching_machine_including_one_that_joins_later() -> None:
    async with memory_cluster() as cluster:
        web1, db, web2 = await start(cluster, {"role": "web"}, {"role": "db"}, {"role": "web"})
        await cluster.submit("everywhere.service", unit_text("Global=true\nMachineMetadata=role=web"))
        await cluster.advance(0.5)
        assert await cluster.where("everywhere.service") == [web1.machine_id, web2.machine_id]
        assert await cluster.placements() == {}  # each agent decides for itself: nothing is scheduled

        late = await cluster.add({"role": "web"})
        other = await cluster.add({"role": "db"})
        took = await cluster.until(lambda: cluster.loaded(late) == {"everywhere.service": "active/running"}, within=1.0)
        assert took == 0.0  # its first reconcile pass, before it has even gossiped: no leader involved
        await converged(cluster)
        assert await cluster.where("everywhere.service") == [web1.machine_id, web2.machine_id, late.machine_id]
        assert cluster.loaded(db) == cluster.loaded(other) == {}


async def test_a_metadata_change_moves_a_unit_that_no_longer_matches() -> None:
    async with memory_cluster() as cluster:
        a, b, c = await start(cluster, {"role": "db"}, {"role": "web"}, {"role": "db"})
        await cluster.submit("web.service", unit_text("MachineMetadata=role=web"))
        await cluster.submit("anywhere.service", unit_text())
        await cluster.advance(0.5)
        assert await cluster.where("web.service") == [b.machine_id]
        anywhere = await cluster.where("anywhere.service")

        c.set_metadata({"role": "web"})
        await cluster.advance(1.0)
        assert await cluster.where("web.service") == [b.machine_id]  # still matches: placements are kept

        changed_at = cluster.clock.monotonic()
        b.set_metadata({"role": "db"})

        async def moved() -> bool:
            return await cluster.where("web.service") == [c.machine_id]

        took = await cluster.until(moved, within=RESCHEDULE_TARGET, each_step=lambda: _at_most_once(cluster))
        heard = a.heard("metadata-changed", b) - changed_at
        # The leader hears of it by gossip, then waits the engine's settle time; nobody waits for a detector.
        assert took == pytest.approx(heard + DEFAULT_SETTLE)
        assert took < 1.0
        assert await cluster.placements() == {"web.service": c.machine_id, "anywhere.service": anywhere[0]}
        assert await cluster.where("anywhere.service") == anywhere  # a unit without requirements stays put
        assert "web.service" not in cluster.loaded(b)


async def _at_most_once(cluster: MemoryCluster) -> bool:
    counts = Counter(unit for units in (await cluster.running()).values() for unit in units)
    return all(count == 1 for count in counts.values())


async def test_a_machine_cut_off_by_a_partition_gives_its_units_up_and_rejoins_when_it_heals() -> None:
    """Gossip cut, registry still reachable (it is the server's): the leader moves the units, and the cut-off
    machine, hearing of its schedule entry's removal, stops its copy: at no moment does a unit run twice."""
    async with memory_cluster() as cluster:
        a, victim, survivor = await placed_on_b_or_c(cluster)
        for other in (a, survivor):
            cluster.network.partition(victim.address, other.address)

        async def moved() -> bool:
            return await cluster.where("moved.service") == [survivor.machine_id]

        await cluster.until(moved, within=RESCHEDULE_TARGET, each_step=lambda: _at_most_once(cluster))
        assert await cluster.containers(victim) == set()  # both units stopped: pinned.service is unplaceable now
        assert a.view()[victim.machine_id] is Status.DEAD
        assert victim.view()[a.machine_id] is Status.DEAD  # it sees the others dead too, and runs no engine

        for other in (a, survivor):
            cluster.network.partition(victim.address, other.address, cut=False)
        await converged(cluster)
        back = [
            event.reason for at, event in a.events if event.member == victim.machine_id and at > a.heard("dead", victim)
        ]
        assert back == ["came back after it was declared dead"]

        async def pinned_back() -> bool:
            return await cluster.where("pinned.service") == [victim.machine_id]

        await cluster.until(pinned_back, within=2.0, each_step=lambda: _at_most_once(cluster))
        assert await single_runs(cluster) == {"moved.service": survivor.machine_id, "pinned.service": victim.machine_id}


async def test_instances_waiting_on_conflicts_are_placed_when_a_machine_joins_and_wait_again_when_one_dies() -> None:
    async with memory_cluster() as cluster:
        nodes = await start(cluster, {}, {}, {})
        instances = [f"hello@{i}.service" for i in range(1, 6)]
        for name in instances:
            await cluster.submit(name, unit_text("Conflicts=hello@*"))
        await cluster.advance(0.5)
        assert len(cluster.engine.unplaceable) == 2

        fourth = await cluster.add()
        await converged(cluster)
        await cluster.advance(0.5)
        assert len(cluster.loaded(fourth)) == 1
        assert len(cluster.engine.unplaceable) == 1

        cluster.kill(nodes[1])
        await cluster.advance(RESCHEDULE_TARGET)
        # The dead machine's instance has nowhere to go (every live machine runs one already): it waits too.
        runs = await single_runs(cluster)
        assert sorted(runs.values()) == sorted([nodes[0].machine_id, nodes[2].machine_id, fourth.machine_id])
        assert len(cluster.engine.unplaceable) == 2
        assert set(cluster.engine.unplaceable) == set(instances) - set(runs)


# --- every node may lead (agents on etcd) ------------------------------------------------------------------------

LEASE_TTL = 3.0


async def test_when_the_leader_dies_another_node_takes_over_at_the_end_of_its_term_and_moves_its_units() -> None:
    async with memory_cluster(every_node_leads=True, lease_ttl=LEASE_TTL) as cluster:
        first = await cluster.add({"zone": "a"})
        await cluster.submit("moving.service", unit_text())  # placed while the first node is the only machine
        await cluster.until(lambda: cluster.loaded(first) == {"moving.service": "active/running"}, within=2.0)
        others = await start(cluster, {"zone": "b"}, {"zone": "c"})
        await cluster.advance(SETTINGS.join_timeout)  # past every engine's membership grace
        assert cluster.leader is first
        cluster.kill(first)
        killed_at = cluster.clock.monotonic()

        def taken_over() -> bool:
            return len(cluster.leading()) == 1

        took_over = await cluster.until(taken_over, within=2 * LEASE_TTL, each_step=lambda: len(cluster.leading()) <= 1)
        new_leader = cluster.leader
        assert new_leader in others
        # The term runs out a TTL after its last renewal (every TTL/3), and the others campaign every TTL/3.
        assert LEASE_TTL - LEASE_TTL / 3 <= took_over <= LEASE_TTL + LEASE_TTL / 3

        async def moved() -> bool:
            return (await single_runs(cluster)).get("moving.service") in {n.machine_id for n in others}

        await cluster.until(moved, within=RESCHEDULE_TARGET)
        took = round(cluster.clock.monotonic() - killed_at, 6)
        # The new leader heard of the death (2.2 s) before it took over: its first pass, at once on taking over,
        # moves the unit, with no grace to wait out (the engine started long before).
        assert new_leader.heard("dead", first) - killed_at < took_over
        assert took == pytest.approx(took_over)
        assert not any(n.engine is not None and n.engine.leading for n in others if n is not new_leader)
