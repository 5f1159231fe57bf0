"""The registry contract on EtcdRegistry, each registry on a real etcd member of its own; and what only etcd has.

Every ``registry_factory`` call starts a fresh single-member etcd (revisions from 1) that closing the registry
kills; the ``etcd_members`` fixture (conftest) kills whatever is left, so a failing test leaves no etcd behind.
"""

from __future__ import annotations

from typing import Self

import anyio
import pytest

from fleetlet.clock import ManualClock, SystemClock
from fleetlet.registry import Change, LeadershipLost, Registry, RevisionCompacted, schedule_key, unit_key
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.etcd import EtcdRegistry
from tests.integration.etcd_rig import EtcdMember, etcd_binary, etcd_cluster
from tests.registry_contract import GUARD, RegistryContract, RegistryFactory, receive, unit

pytestmark = pytest.mark.integration


class SpawnedEtcdRegistry(EtcdRegistry):
    """An EtcdRegistry on an etcd member that entering starts and closing kills."""

    def __init__(self, member: EtcdMember, clock: ManualClock, history: int) -> None:
        super().__init__(member.url, clock=clock, history=history)
        self.member = member

    async def __aenter__(self) -> Self:
        await self.member.start()
        return await super().__aenter__()

    async def aclose(self) -> None:
        # Shielded: the contract's closing test awaits this in a task group that the ended watch cancels.
        with anyio.CancelScope(shield=True):
            try:
                await super().aclose()
            finally:
                self.member.kill()


@pytest.fixture
def registry_factory(etcd_members: list[EtcdMember]) -> RegistryFactory:
    binary = etcd_binary()

    def make(clock: ManualClock, history: int) -> SpawnedEtcdRegistry:
        member = EtcdMember(binary)
        etcd_members.append(member)
        return SpawnedEtcdRegistry(member, clock, history)

    return make


class TestEtcdRegistry(RegistryContract):
    pass


def test_etcd_registry_is_a_registry() -> None:
    """Checked by mypy: the class satisfies the Registry protocol (constructing it connects to nothing)."""
    registry: Registry = EtcdRegistry("http://127.0.0.1:1")
    assert registry is not None


@pytest.mark.anyio
async def test_watch_resumes_across_an_etcd_restart_without_loss_or_duplicate(
    member: EtcdMember, caplog: pytest.LogCaptureFixture
) -> None:
    async with EtcdRegistry(member.url, clock=ManualClock()) as registry:
        await registry.put_unit("a.service", unit())
        send, changes = anyio.create_memory_object_stream[Change](100)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            (first,) = await receive(changes, 1)
            await registry.set_machine("a.service", "m1")
            await registry.set_machine("a.service", "m2")  # a move: two changes at one revision
            moved = await receive(changes, 3)
            member.stop()  # SIGKILL: the stream breaks as in a crash
            with anyio.fail_after(GUARD):
                await member.start()
            await registry.put_unit("b.service", unit())
            await registry.delete_unit("a.service")  # two changes: the unit and its schedule entry
            after = await receive(changes, 3)
            revisions = [c.revision for c in [first, *moved, *after]]
            assert revisions == [1, 2, 3, 3, 4, 5, 5]
            assert [c.key for c in after[1:]] == [unit_key("a.service"), schedule_key("m2", "a.service")]
            tg.cancel_scope.cancel()
    assert "etcd watch broken" in caplog.text  # it did reconnect


@pytest.mark.anyio
async def test_another_agent_sees_the_term_by_its_lease_and_takes_over_when_it_expires(member: EtcdMember) -> None:
    """Real time: the term's lease expires in etcd, which deletes the key; nobody's clock decides for the others."""
    async with (
        EtcdRegistry(member.url, clock=SystemClock()) as holder,
        EtcdRegistry(member.url, clock=SystemClock()) as other,
    ):
        term = await holder.campaign("m1", ttl=1)  # etcd grants at least its minimum TTL (2 s by default)
        assert term is not None
        seen = await other.leader()
        assert seen is not None
        assert (seen.machine_id, seen.revision) == ("m1", term.revision)
        assert await other.campaign("m2", ttl=1) is None
        renewed = await holder.renew(term, ttl=1)  # a keep-alive: no write
        assert (renewed.revision, await other.revision()) == (term.revision, term.revision)
        # The holder stops renewing, as a dead agent would: etcd deletes the key when the lease runs out.
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(lambda: other.watch(term.revision, send, prefix="leader"))
            (expired,) = await receive(changes, 1)
            assert (expired.kind, expired.key) == ("delete", "leader")
            tg.cancel_scope.cancel()
        assert await other.leader() is None
        second = await other.campaign("m2", ttl=5)
        assert second is not None
        assert second.revision > expired.revision
        with pytest.raises(LeadershipLost):
            await holder.renew(term, ttl=1)


@pytest.mark.anyio
async def test_the_registry_compacts_etcd_and_etcds_compaction_is_revision_compacted(member: EtcdMember) -> None:
    """One registry keeps 5 revisions and compacts etcd; another, leaving compaction to etcd, hears etcd refuse."""
    async with (
        EtcdRegistry(member.url, history=5) as writer,
        EtcdRegistry(member.url, history=None) as reader,
    ):
        for i in range(12):
            await writer.put_unit(f"u{i}.service", unit())
        send, unused = anyio.create_memory_object_stream[Change](10)
        with unused, pytest.raises(RevisionCompacted) as caught, anyio.fail_after(GUARD):
            await reader.watch(0, send)
        assert (caught.value.requested, caught.value.compacted) == (0, 7)


@pytest.mark.anyio
async def test_prefixes_keep_registries_apart(member: EtcdMember) -> None:
    async with (
        EtcdRegistry(member.url, prefix="/one/") as one,
        EtcdRegistry(member.url, prefix="/two/") as two,
    ):
        await one.put_unit("a.service", unit())
        await one.set_machine("a.service", "m1")
        assert await two.get_unit("a.service") is None
        assert (await two.schedule()).entries == {}
        assert (await two.list_units()).units == ()
        assert (await one.machine_schedule("m1")).entries["a.service"].machine_id == "m1"


@pytest.mark.anyio
async def test_an_unreachable_member_is_skipped_and_none_is_registry_unavailable(member: EtcdMember) -> None:
    dead = "http://127.0.0.1:9"
    async with EtcdRegistry([dead, member.url]) as registry:
        assert await registry.put_unit("a.service", unit()) == 1
    with anyio.fail_after(GUARD):
        async with EtcdRegistry(dead, timeout=2) as registry:
            with pytest.raises(RegistryUnavailable) as caught:
                await registry.get_unit("a.service")
    assert "127.0.0.1:9" in str(caught.value)


@pytest.mark.anyio
async def test_a_watch_on_a_member_gone_silent_moves_to_another_and_misses_nothing(
    etcd_members: list[EtcdMember], caplog: pytest.LogCaptureFixture
) -> None:
    """A 3-member cluster; the member a watch streams from stops answering (SIGSTOP: its connections stay open, as
    across a cut network). The watch's probe notices, and the watch resumes on another member."""
    members = await etcd_cluster(etcd_binary(), 3, etcd_members)
    urls = [m.url for m in members]
    async with (
        EtcdRegistry(urls, timeout=2, watch_probe=0.5) as watcher,
        EtcdRegistry(urls[1:], timeout=2) as writer,
    ):
        await writer.put_unit("a.service", unit())
        send, changes = anyio.create_memory_object_stream[Change](100)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(watcher.watch, 0, send)
            (first,) = await receive(changes, 1)  # streaming from urls[0], the first listed
            members[0].pause()
            try:
                with anyio.fail_after(GUARD):
                    while True:  # the cluster may be electing a leader, if the paused member led
                        try:
                            await writer.put_unit("b.service", unit())
                            break
                        except RegistryUnavailable:
                            await anyio.sleep(0.1)
                    await writer.delete_unit("a.service")
                after = await receive(changes, 2)
            finally:
                members[0].resume()
            assert [(c.kind, c.key) for c in [first, *after]] == [
                ("put", unit_key("a.service")),
                ("put", unit_key("b.service")),
                ("delete", unit_key("a.service")),
            ]
            tg.cancel_scope.cancel()
    assert "etcd watch broken" in caplog.text


@pytest.mark.anyio
async def test_concurrent_moves_leave_one_entry_per_unit(member: EtcdMember) -> None:
    """Unconditional moves race (each reads where the unit is, then writes): the placement index and the entries
    never disagree, and no machine keeps a stale entry."""
    async with EtcdRegistry(member.url) as registry:
        await registry.put_unit("a.service", unit())

        async def move(machine: str) -> None:
            for _ in range(3):
                await registry.set_machine("a.service", machine)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(move, f"m{i}")
        (entry,) = (await registry.schedule()).entries.values()
        assert (await registry.machine_schedule(entry.machine_id)).entries == {"a.service": entry}
        assert await registry.revision() == 31  # every move was one write
        await registry.delete_unit("a.service")
        assert (await registry.schedule()).entries == {}


@pytest.mark.anyio
async def test_a_restarted_agent_keeps_its_term(member: EtcdMember) -> None:
    """The same machine campaigning through a new registry object (its agent restarted) renews the term it held."""
    async with EtcdRegistry(member.url) as before:
        term = await before.campaign("m1", ttl=10)
    assert term is not None
    async with EtcdRegistry(member.url) as after:
        again = await after.campaign("m1", ttl=10)
        assert again is not None
        assert (again.machine_id, again.revision) == ("m1", term.revision)
        assert await after.campaign("m2", ttl=10) is None
        await after.resign(again)
        assert await after.leader() is None
