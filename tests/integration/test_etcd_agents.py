"""Real agent processes on a real etcd registry: every agent may lead; a dead leader hands over; etcd trouble stops
no unit.

Each test starts etcd members of its own (fresh data, free loopback ports) and agents that all name them with
``--registry etcd://...`` and nothing else: they find each other's gossip through etcd's member directory, with no
``--join``. The first agent started leads (it campaigns first). What
runs where is read off the Docker engine, as in ``test_cluster_agents``. Waits poll with a bound, never a fixed
sleep, except where a test checks that nothing changes for a while.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest

from tests.integration.agent_rig import BOUND, until
from tests.integration.cluster_rig import Cluster, Member, three, unit
from tests.integration.etcd_pki import make_pki
from tests.integration.etcd_rig import EtcdMember, enable_auth, etcd_binary, etcd_cluster, registry_args

pytestmark = pytest.mark.integration

LEADER_TTL = 3.0


@pytest.fixture
def etcd(etcd_members: list[EtcdMember]) -> EtcdMember:
    member = EtcdMember(etcd_binary())
    etcd_members.append(member)
    anyio.run(member.start)
    return member


@pytest.fixture
def on_etcd(docker_url: str, etcd: EtcdMember) -> Iterator[Cluster]:
    rig = Cluster(docker_url, registry_args=registry_args([etcd], leader_ttl=LEADER_TTL), join_server=False)
    try:
        yield rig
    finally:
        rig.cleanup()


def machine_count(cluster: Cluster, via: Member | None = None) -> int:
    return len(cluster.fleetlet("list-machines", "--no-legend", via=via).stdout.splitlines())


def test_three_agents_on_etcd_place_by_metadata_conflicts_and_machine_of(on_etcd: Cluster) -> None:
    cluster = on_etcd
    three(cluster)
    a, b, c = (m.machine_id for m in cluster.members)
    until(lambda: all(machine_count(cluster, via=m) == 3 for m in cluster.members))
    files = {
        "ssd.service": unit("MachineMetadata=disk=ssd\nMachineMetadata=zone=c"),
        "web.service": unit("MachineMetadata=zone=b"),
        "sidekick.service": unit("MachineOf=web.service"),
        "hello@.service": unit("Conflicts=hello@*"),
    }
    hellos = [f"hello@{i}.service" for i in range(1, 6)]
    # Submitted through a member that does not lead: every agent writes to etcd itself.
    cluster.submit(files, "start", "--no-block", "ssd.service", "web.service", "sidekick.service", *hellos)

    def settled() -> bool:
        running = cluster.running()
        placed_hellos = sum(1 for units in running.values() for name in units if name.startswith("hello@"))
        on_b = running[b] >= {"web.service", "sidekick.service"}
        return running[c] >= {"ssd.service"} and on_b and placed_hellos == 3

    until(settled)
    running = cluster.running()
    assert cluster.placed("ssd.service") == [c]
    assert cluster.placed("web.service") == cluster.placed("sidekick.service") == [b]
    per_machine = {m: sorted(u for u in units if u.startswith("hello@")) for m, units in running.items()}
    assert sorted(len(units) for units in per_machine.values()) == [1, 1, 1], per_machine
    assert cluster.leader().machine_id == a  # the first to campaign leads; the others wait their turn
    explained = cluster.fleetlet(
        "explain", next(h for h in hellos if not cluster.placed(h)), via=cluster.members[2], check=False
    )
    assert "conflict" in (explained.stdout + explained.stderr).lower(), explained


def test_killing_the_leader_agent_hands_over_within_its_term_and_its_units_move(on_etcd: Cluster) -> None:
    cluster = on_etcd
    leader = cluster.add("zone=a")
    # Placed while the leader is the only machine: the unit runs on the machine about to die.
    files = {"moving.service": unit(), "waiting.service": unit("MachineMetadata=zone=b")}
    cluster.submit(files, "start", "moving.service")
    until(lambda: cluster.placed("moving.service") == [leader.machine_id])
    cluster.add("zone=b")
    survivor = cluster.add("zone=c")
    until(lambda: machine_count(cluster, via=survivor) == 3)
    assert cluster.leader() is leader

    killed_at = time.monotonic()
    cluster.kill(leader)
    # A unit that waits for a decision: only the next leader can place it.
    cluster.fleetlet("start", "--no-block", "waiting.service", via=survivor, cwd=cluster.root / "units")

    def handed_over() -> bool:
        moved = [m for m in cluster.placed("moving.service") if m != leader.machine_id]
        return moved != [] and cluster.placed("waiting.service") == [cluster.members[1].machine_id]

    until(handed_over, bound=15)
    elapsed = time.monotonic() - killed_at
    print(f"new leader placed and moved units {elapsed:.2f}s after the kill (leader TTL {LEADER_TTL}s)")
    new_leader = cluster.leader()
    assert new_leader is not leader
    # The term runs out at most LEADER_TTL after the last renewal; then one campaign (a third of it) and a pass.
    assert elapsed < LEADER_TTL + 2.0, f"handed over after {elapsed:.1f}s\n{cluster.logs()}"

    # The old leader comes back: it finds its unit placed elsewhere, stops its copy, and does not take over.
    cluster.start(leader, join=survivor)
    until(lambda: leader.machine_id not in cluster.placed("moving.service"))
    assert len(cluster.placed("moving.service")) == 1
    assert cluster.leader() is new_leader


def test_an_agent_that_joins_through_a_member_uses_etcd_itself_and_leads_once_that_member_is_gone(
    on_etcd: Cluster,
) -> None:
    cluster = on_etcd
    first = cluster.add("role=first")
    # Told only a member to join through: it learns where the registry is, and uses etcd as the members do.
    joined = cluster.add("role=joined", join=first, registry_args=())
    assert "the cluster's registry is etcd at" in joined.log.read_text(), joined.log.read_text()
    cluster.kill(first)
    # Not the member's registry by proxy: with that member gone, the joined agent still reads it, then leads.
    cluster.submit({"after.service": unit()}, "start", "--no-block", "after.service", via=joined)
    until(lambda: cluster.placed("after.service") == [joined.machine_id])
    assert cluster.leader() is joined


def test_while_etcd_is_down_units_keep_running_and_decisions_resume_when_it_is_back(
    on_etcd: Cluster, etcd: EtcdMember
) -> None:
    cluster = on_etcd
    first = cluster.add("role=server")
    worker = cluster.add("role=worker")
    files = {"work.service": unit("MachineMetadata=role=worker"), "later.service": unit("MachineMetadata=role=worker")}
    cluster.submit(files, "start", "work.service", "--no-block")
    cluster.submit({}, "submit", "later.service")
    until(lambda: cluster.placed("work.service") == [worker.machine_id])
    etcd.stop()  # SIGKILL: as a crash or a partition from the agents would look
    refused = cluster.fleetlet("list-unit-files", via=worker, check=False)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    # Longer than a leader's term: the leader stops deciding, and still nothing stops (fleet stopped units here).
    deadline = time.monotonic() + 2 * LEADER_TTL
    while time.monotonic() < deadline:
        assert cluster.placed("work.service") == [worker.machine_id], cluster.logs()
        time.sleep(0.5)
    # Members keep gossiping their states meanwhile: the unit's state is still known to the other member.
    assert any(row["unit"] == "work.service" for row in _states(first)), cluster.logs()
    anyio.run(etcd.start)
    cluster.fleetlet("start", "--no-block", "later.service", via=first)
    until(lambda: cluster.placed("later.service") == [worker.machine_id])
    assert cluster.placed("work.service") == [worker.machine_id]


def _states(member: Member) -> list[dict[str, str]]:
    """The unit states a member knows (fleet's /state): served from gossip, without the registry."""

    async def get() -> list[dict[str, str]]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{member.url}/fleet/v1/state") as response:
                assert response.status == 200, await response.text()
                body = await response.json()
        return [{"unit": s["name"], "machine": s["machineID"]} for s in body.get("states", [])]

    return anyio.run(get)


@pytest.fixture
def etcd_three(etcd_members: list[EtcdMember]) -> list[EtcdMember]:
    return anyio.run(etcd_cluster, etcd_binary(), 3, etcd_members)


def test_killing_the_etcd_leader_member_stops_no_unit_and_loses_no_acknowledged_write(
    docker_url: str, etcd_three: list[EtcdMember]
) -> None:
    cluster = Cluster(docker_url, registry_args=registry_args(etcd_three, leader_ttl=LEADER_TTL), join_server=False)
    try:
        cluster.add("zone=a")
        cluster.add("zone=b")
        until(lambda: machine_count(cluster) == 2)
        cluster.submit({"steady@.service": unit("Conflicts=steady@*")}, "start", "steady@1.service", "steady@2.service")
        until(lambda: sorted(len(u) for u in cluster.running().values()) == [1, 1])
        before = cluster.running()

        leader = anyio.run(_etcd_leader, etcd_three)
        leader.stop()  # SIGKILL the member that leads etcd's raft
        acknowledged: list[str] = []
        # Writes go on meanwhile, through whichever member answers: every one acknowledged must survive.
        for i in range(1, 11):
            name = f"write{i}.service"
            (cluster.root / "units" / name).write_text(unit())
            done = cluster.fleetlet("submit", name, check=False, cwd=cluster.root / "units")
            if done.returncode == 0:
                acknowledged.append(name)
            else:
                assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert cluster.running() == before, cluster.logs()  # no unit stopped, none moved
        assert acknowledged, "no write was acknowledged while two of three etcd members served"
        listed = cluster.fleetlet("list-unit-files", "--no-legend").stdout
        assert all(name in listed for name in acknowledged), listed
        # Decisions go on with two members of three.
        cluster.submit({"after.service": unit()}, "start", "after.service")
        until(lambda: len(cluster.placed("after.service")) == 1, bound=BOUND)
        assert cluster.running()[cluster.members[0].machine_id] >= before[cluster.members[0].machine_id]
    finally:
        cluster.cleanup()


async def _etcd_leader(members: list[EtcdMember]) -> EtcdMember:
    """The member that leads etcd's raft, by its own status (``/v3/maintenance/status``)."""
    async with aiohttp.ClientSession() as session:
        for member in members:
            async with session.post(f"{member.url}/v3/maintenance/status", json={}) as response:
                status = await response.json()
            if status["header"]["member_id"] == status["leader"]:
                return member
    raise AssertionError("no etcd member says it leads")


def test_agents_on_etcd_over_tls_with_a_password_and_a_wrong_password_refused_in_one_line(
    docker_url: str, etcd_members: list[EtcdMember], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    member = EtcdMember(etcd_binary(), pki=pki)
    etcd_members.append(member)

    async def secured() -> None:
        await member.start()
        await enable_auth(member, "root-secret", {"fleet": "fleet-secret"})

    anyio.run(secured)
    password = tmp_path / "password"
    password.write_text("fleet-secret\n")  # as `echo secret > file` writes it: the newline is not the password
    hosts = member.url.removeprefix("https://")
    secure = ("--registry", f"etcds://{hosts}", "--etcd-cafile", str(pki.ca), "--etcd-username", "fleet")
    cluster = Cluster(docker_url, registry_args=(*secure, "--etcd-password-file", str(password)), join_server=False)
    try:
        first = cluster.add("role=web")
        cluster.submit({"secure.service": unit()}, "start", "secure.service")
        until(lambda: cluster.placed("secure.service") == [first.machine_id])
        wrong = tmp_path / "wrong"
        wrong.write_text("guess\n")
        state = tmp_path / "intruder"
        state.mkdir()
        refused = cluster.start_failing([*secure, "--etcd-password-file", str(wrong), "--state-dir", str(state)])
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"fleetlet agent: cannot use the etcd registry etcds://{hosts}: "
            f"etcd at https://{hosts} refused user 'fleet': authentication failed"
        ], refused.stderr
    finally:
        cluster.cleanup()
