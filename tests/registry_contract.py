"""The Registry contract: one set of tests that every backend must pass (memory, SQLite, remote and etcd).

A test module subclasses :class:`RegistryContract` and provides a ``registry_factory`` fixture: a function of
``(clock, history)`` returning an unopened registry that ``async with`` opens and closes. Time is a ManualClock:
leader TTLs expire by ``clock.advance``, never by sleeping. ``fail_after`` bounds only guard against hangs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from fleetlet.clock import ManualClock
from fleetlet.registry import (
    Change,
    LeadershipLost,
    Registry,
    RegistryClosed,
    RegistryConflict,
    RevisionCompacted,
    ScheduleEntry,
    UnitNotFound,
    UnitRecord,
    schedule_key,
    schedule_prefix,
    unit_key,
)
from fleetlet.units.model import UnitFile
from fleetlet.units.syntax import parse

# (clock, history) -> an unopened registry that ``async with`` opens; Any because Registry itself has no __aenter__.
RegistryFactory = Callable[[ManualClock, int], Any]
GUARD = 10  # seconds: only ever reached if a test hangs


def unit(body: str = "sleep 1") -> UnitFile:
    return parse(f"[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/{body}\n")


async def receive(stream: MemoryObjectReceiveStream[Change], count: int) -> list[Change]:
    with anyio.fail_after(GUARD):
        return [await stream.receive() for _ in range(count)]


class RegistryContract:
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def registry(self, registry_factory: RegistryFactory, clock: ManualClock) -> AsyncIterator[Registry]:
        async with registry_factory(clock, 10_000) as registry:
            yield registry

    # --- units -------------------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_empty(self, registry: Registry) -> None:
        assert await registry.revision() == 0
        assert await registry.get_unit("a.service") is None
        page = await registry.list_units()
        assert (page.units, page.next_token, page.revision) == ((), None, 0)
        assert (await registry.schedule()).entries == {}
        assert await registry.leader() is None

    @pytest.mark.anyio
    async def test_put_unit_stores_normalized_text_and_hash(self, registry: Registry) -> None:
        file = unit()
        revision = await registry.put_unit("a.service", file, desired_state="launched")
        assert revision == 1
        assert await registry.get_unit("a.service") == UnitRecord(
            "a.service", file.serialize(), file.hash, "launched", 1
        )
        assert await registry.revision() == 1

    @pytest.mark.anyio
    async def test_every_write_gets_a_strictly_greater_revision(self, registry: Registry) -> None:
        revisions = [
            await registry.put_unit("a.service", unit()),
            await registry.put_unit("a.service", unit("true")),
            await registry.set_desired_state("a.service", "loaded"),
            await registry.set_machine("a.service", "m1"),
            await registry.clear_machine("a.service"),
            await registry.delete_unit("a.service"),
        ]
        assert revisions == [1, 2, 3, 4, 5, 6]
        assert await registry.revision() == 6

    @pytest.mark.anyio
    async def test_replace_changes_text_hash_and_state(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit(), desired_state="launched")
        await registry.put_unit("a.service", unit("true"))
        record = await registry.get_unit("a.service")
        assert record is not None
        assert (record.hash, record.desired_state, record.revision) == (unit("true").hash, "inactive", 2)

    @pytest.mark.anyio
    async def test_set_desired_state(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        assert await registry.set_desired_state("a.service", "launched") == 2
        record = await registry.get_unit("a.service")
        assert record is not None
        assert (record.desired_state, record.revision, record.hash) == ("launched", 2, unit().hash)
        with pytest.raises(UnitNotFound) as caught:
            await registry.set_desired_state("b.service", "launched")
        assert caught.value.unit == "b.service"
        with pytest.raises(ValueError, match="desired state"):
            await registry.set_desired_state("a.service", "running")  # type: ignore[arg-type]
        assert await registry.revision() == 2

    @pytest.mark.anyio
    async def test_delete_unit_drops_its_schedule_in_the_same_write(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        await registry.set_machine("a.service", "m1")
        assert await registry.delete_unit("a.service") == 3
        assert await registry.get_unit("a.service") is None
        assert (await registry.schedule()).entries == {}
        with pytest.raises(UnitNotFound):
            await registry.delete_unit("a.service")

    @pytest.mark.anyio
    async def test_pagination_is_sorted_by_name_with_opaque_tokens(self, registry: Registry) -> None:
        names = [f"u{i:02d}.service" for i in range(25)]
        for name in reversed(names):
            await registry.put_unit(name, unit())
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            page = await registry.list_units(limit=10, after=token)
            pages += 1
            assert page.revision == 25
            seen.extend(record.name for record in page.units)
            token = page.next_token
            if token is None:
                break
            assert "u" not in token or token not in names  # opaque, not the bare name
        assert (seen, pages) == (names, 3)
        exact = await registry.list_units(limit=25)
        assert (len(exact.units), exact.next_token) == (25, None)
        with pytest.raises(ValueError, match="limit"):
            await registry.list_units(limit=0)
        with pytest.raises(ValueError, match="token"):
            await registry.list_units(after="!!not a token!!")

    # --- conditional writes ------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_conditional_put_create_and_replace(self, registry: Registry) -> None:
        assert await registry.put_unit("a.service", unit(), expect_revision=0) == 1
        with pytest.raises(RegistryConflict) as caught:
            await registry.put_unit("a.service", unit("true"), expect_revision=0)
        assert (caught.value.key, caught.value.expected, caught.value.actual) == (unit_key("a.service"), 0, 1)
        assert await registry.put_unit("a.service", unit("true"), expect_revision=1) == 2
        with pytest.raises(RegistryConflict):
            await registry.set_desired_state("a.service", "launched", expect_revision=1)
        with pytest.raises(RegistryConflict):
            await registry.delete_unit("a.service", expect_revision=1)
        with pytest.raises(RegistryConflict):
            await registry.delete_unit("b.service", expect_revision=3)
        assert await registry.revision() == 2  # nothing written by the losers
        record = await registry.get_unit("a.service")
        assert record is not None
        assert (record.hash, record.desired_state) == (unit("true").hash, "inactive")
        assert await registry.set_desired_state("a.service", "loaded", expect_revision=2) == 3
        assert await registry.delete_unit("a.service", expect_revision=3) == 4

    @pytest.mark.anyio
    async def test_a_write_fenced_by_a_term_lands_only_in_that_term(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        await registry.put_unit("b.service", unit())
        first = await registry.campaign("m1", ttl=10)
        assert first is not None
        placed = await registry.set_machine("a.service", "m1", expect_revision=0, term=first.revision)
        assert await registry.set_machine("b.service", "m1", term=first.revision) == placed + 1
        await registry.resign(first)
        after = await registry.revision()
        # A write of the old leader, delayed past its term: refused, and nothing written.
        with pytest.raises(LeadershipLost):
            await registry.set_machine("a.service", "m2", expect_revision=placed, term=first.revision)
        with pytest.raises(LeadershipLost):
            await registry.set_machine("c.service", "m2", expect_revision=0, term=first.revision)
        with pytest.raises(LeadershipLost):
            await registry.clear_machine("b.service", term=first.revision)
        second = await registry.campaign("m2", ttl=10)
        assert second is not None
        with pytest.raises(LeadershipLost):  # still the old term's, though a term is on again
            await registry.set_machine("a.service", "m2", term=first.revision)
        assert await registry.revision() == second.revision == after + 1
        assert await registry.set_machine("a.service", "m2", term=second.revision) == second.revision + 1
        assert await registry.clear_machine("b.service", term=second.revision) == second.revision + 2
        entries = (await registry.schedule()).entries
        assert {name: entry.machine_id for name, entry in entries.items()} == {"a.service": "m2"}

    @pytest.mark.anyio
    async def test_deposed_leaders_stale_decision_conflicts(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        await registry.set_machine("a.service", "m1", expect_revision=0)  # the old leader's decision
        seen = (await registry.schedule()).entries["a.service"]
        await registry.set_machine("a.service", "m2", expect_revision=seen.revision)  # the new leader moves it
        with pytest.raises(RegistryConflict) as caught:
            await registry.set_machine("a.service", "m3", expect_revision=seen.revision)  # old leader, stale
        assert caught.value.actual == 3
        with pytest.raises(RegistryConflict):
            await registry.clear_machine("a.service", expect_revision=seen.revision)
        with pytest.raises(RegistryConflict):
            await registry.set_machine("a.service", "m3", expect_revision=0)
        assert (await registry.schedule()).entries["a.service"].machine_id == "m2"
        assert await registry.clear_machine("a.service", expect_revision=3) == 4

    # --- the schedule ------------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_schedule_set_move_clear(self, registry: Registry) -> None:
        for name in ("a.service", "b.service", "c.service"):
            await registry.put_unit(name, unit())
        await registry.set_machine("a.service", "m1")
        await registry.set_machine("b.service", "m1")
        await registry.set_machine("c.service", "m2")
        view = await registry.schedule()
        assert view.revision == 6
        assert view.entries == {
            "a.service": ScheduleEntry("a.service", "m1", 4),
            "b.service": ScheduleEntry("b.service", "m1", 5),
            "c.service": ScheduleEntry("c.service", "m2", 6),
        }
        assert set((await registry.machine_schedule("m1")).entries) == {"a.service", "b.service"}
        assert await registry.set_machine("a.service", "m2") == 7
        assert set((await registry.machine_schedule("m1")).entries) == {"b.service"}
        assert set((await registry.machine_schedule("m2")).entries) == {"a.service", "c.service"}
        assert await registry.clear_machine("b.service") == 8
        assert await registry.clear_machine("b.service") == 8  # not placed: nothing written
        assert (await registry.machine_schedule("m1")).entries == {}
        assert (await registry.machine_schedule("nobody")).revision == 8
        with pytest.raises(UnitNotFound):
            await registry.set_machine("ghost.service", "m1")
        with pytest.raises(UnitNotFound):  # as the leader places a unit it saw, destroyed meanwhile
            await registry.set_machine("ghost.service", "m1", expect_revision=0)
        assert await registry.revision() == 8  # neither wrote anything

    # --- the leader record -------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_leader_campaign_renew_expire(self, registry: Registry, clock: ManualClock) -> None:
        first = await registry.campaign("m1", ttl=10)
        assert first is not None
        assert (first.machine_id, first.revision, first.expires_at) == ("m1", 1, clock.time() + 10)
        assert await registry.campaign("m2", ttl=10) is None
        assert await registry.leader() == first
        clock.advance(6)
        renewed = await registry.renew(first, ttl=10)
        assert (renewed.revision, renewed.expires_at) == (1, clock.time() + 10)
        assert await registry.revision() == 1  # a renewal is no change
        again = await registry.campaign("m1", ttl=10)  # the holder campaigning again keeps its term
        assert again is not None
        assert again.revision == 1
        clock.advance(9.5)
        assert await registry.leader() is not None
        clock.advance(0.5)
        assert await registry.leader() is None  # expired exactly at expires_at
        with pytest.raises(LeadershipLost):
            await registry.renew(first, ttl=10)
        second = await registry.campaign("m2", ttl=5)
        assert second is not None
        assert (second.machine_id, second.revision) == ("m2", 2)
        with pytest.raises(LeadershipLost):
            await registry.renew(first, ttl=10)
        await registry.resign(first)  # not its term any more: nothing happens
        assert await registry.leader() == second
        await registry.resign(second)
        assert await registry.leader() is None
        assert await registry.revision() == 3
        with pytest.raises(ValueError, match="ttl"):
            await registry.campaign("m1", ttl=0)

    @pytest.mark.anyio
    async def test_concurrent_campaigns_elect_one(self, registry: Registry) -> None:
        winners: list[str] = []

        async def campaign(machine: str) -> None:
            if await registry.campaign(machine, ttl=10) is not None:
                winners.append(machine)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(campaign, f"m{i}")
        assert len(winners) == 1
        leader = await registry.leader()
        assert leader is not None
        assert leader.machine_id == winners[0]

    # --- watching ----------------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_watch_replays_then_follows(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        await registry.set_machine("a.service", "m1")
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            replayed = await receive(changes, 2)
            assert [(c.revision, c.kind, c.key) for c in replayed] == [
                (1, "put", unit_key("a.service")),
                (2, "put", schedule_key("m1", "a.service")),
            ]
            assert replayed[1].value == ScheduleEntry("a.service", "m1", 2)
            await registry.delete_unit("a.service")
            live = await receive(changes, 2)
            assert [(c.revision, c.kind, c.key, c.value) for c in live] == [
                (3, "delete", unit_key("a.service"), None),
                (3, "delete", schedule_key("m1", "a.service"), None),
            ]
            tg.cancel_scope.cancel()

    @pytest.mark.anyio
    async def test_watch_from_a_revision_skips_older_changes(self, registry: Registry) -> None:
        for name in ("a.service", "b.service", "c.service"):
            await registry.put_unit(name, unit())
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 2, send)
            (change,) = await receive(changes, 1)
            assert (change.revision, change.key) == (3, unit_key("c.service"))
            tg.cancel_scope.cancel()

    @pytest.mark.anyio
    async def test_machine_watch_hears_only_its_own_schedule(self, registry: Registry) -> None:
        for name in ("a.service", "b.service"):
            await registry.put_unit(name, unit())
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(lambda: registry.watch(0, send, prefix=schedule_prefix("m1")))
            await registry.set_machine("b.service", "m2")
            await registry.set_machine("a.service", "m1")
            await registry.set_machine("b.service", "m10")  # a prefix of "m1" as a string, not as a machine
            await registry.set_machine("a.service", "m2")  # moved away: m1 hears the delete
            await registry.put_unit("c.service", unit())
            await registry.set_machine("c.service", "m1")
            heard = await receive(changes, 3)
            assert [(c.revision, c.kind, c.key) for c in heard] == [
                (4, "put", schedule_key("m1", "a.service")),
                (6, "delete", schedule_key("m1", "a.service")),
                (8, "put", schedule_key("m1", "c.service")),
            ]
            tg.cancel_scope.cancel()

    @pytest.mark.anyio
    async def test_watch_ends_when_the_receiver_closes(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        send, changes = anyio.create_memory_object_stream[Change](10)
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(registry.watch, 0, send)
                await receive(changes, 1)
                changes.close()
                await registry.put_unit("b.service", unit())  # the watch finds nobody listening, and returns

    @pytest.mark.anyio
    async def test_watch_of_a_compacted_revision_fails_clearly(
        self, registry_factory: RegistryFactory, clock: ManualClock
    ) -> None:
        async with registry_factory(clock, 5) as registry:
            for i in range(12):
                await registry.put_unit(f"u{i}.service", unit())
            send, unused = anyio.create_memory_object_stream[Change](10)
            with unused, pytest.raises(RevisionCompacted) as caught:
                await registry.watch(6, send)
            assert (caught.value.requested, caught.value.compacted) == (6, 7)
            assert "re-read" in str(caught.value)
            send, changes = anyio.create_memory_object_stream[Change](10)
            async with anyio.create_task_group() as tg, changes:
                tg.start_soon(registry.watch, 7, send)
                assert [c.revision for c in await receive(changes, 5)] == [8, 9, 10, 11, 12]
                tg.cancel_scope.cancel()

    @pytest.mark.anyio
    async def test_slow_watcher_gets_every_change_in_order(self, registry: Registry) -> None:
        """More changes than the sink holds and than one log read returns: backpressure, nothing lost."""
        send, changes = anyio.create_memory_object_stream[Change](1)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            for i in range(300):
                await registry.put_unit(f"u{i}.service", unit())
                await registry.set_machine(f"u{i}.service", "m1")
            got = await receive(changes, 600)
            assert [c.revision for c in got] == list(range(1, 601))
            tg.cancel_scope.cancel()

    @pytest.mark.anyio
    async def test_closing_the_registry_ends_watches(
        self, registry_factory: RegistryFactory, clock: ManualClock
    ) -> None:
        registry = registry_factory(clock, 100)
        await registry.__aenter__()
        send, changes = anyio.create_memory_object_stream[Change](10)
        ended = False
        try:
            with anyio.fail_after(GUARD):
                async with anyio.create_task_group() as tg, changes:
                    tg.start_soon(registry.watch, 0, send)
                    await anyio.wait_all_tasks_blocked()
                    await registry.aclose()
        except* RegistryClosed:
            ended = True
        assert ended
        with pytest.raises(RegistryClosed):
            await registry.put_unit("a.service", unit())

    # --- concurrency -------------------------------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_concurrent_writers_get_distinct_consecutive_revisions(self, registry: Registry) -> None:
        revisions: list[int] = []

        async def writer(i: int) -> None:
            for j in range(5):
                revisions.append(await registry.put_unit(f"w{i}-{j}.service", unit()))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(writer, i)
        assert sorted(revisions) == list(range(1, 251))
        page = await registry.list_units(limit=1000)
        assert len(page.units) == 250
        assert sorted(record.revision for record in page.units) == list(range(1, 251))

    @pytest.mark.anyio
    async def test_concurrent_conditional_writes_have_one_winner(self, registry: Registry) -> None:
        await registry.put_unit("a.service", unit())
        outcomes: list[str] = []

        async def place(machine: str) -> None:
            try:
                await registry.set_machine("a.service", machine, expect_revision=0)
                outcomes.append(machine)
            except RegistryConflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(place, f"m{i}")
        winners = [o for o in outcomes if o != "conflict"]
        assert len(winners) == 1
        assert len(outcomes) == 20
        assert (await registry.schedule()).entries["a.service"].machine_id == winners[0]
        assert await registry.revision() == 2

    @pytest.mark.anyio
    async def test_a_cancelled_writer_does_not_block_the_others(self, registry: Registry) -> None:
        async def put(name: str) -> None:
            await registry.put_unit(name, unit())

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(put, f"u{i}.service")
            with anyio.CancelScope() as scope:
                scope.cancel()
                await put("cancelled.service")
        names = {record.name for record in (await registry.list_units()).units}
        assert {f"u{i}.service" for i in range(10)} <= names
        assert await registry.put_unit("after.service", unit()) == await registry.revision()
