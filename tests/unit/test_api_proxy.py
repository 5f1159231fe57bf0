"""A unit's status and journal answered by the member that runs it: two real APIs on loopback, one registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetlet.api import StaticView, fleet_v1_app
from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry
from fleetlet.service.journal import MemoryJournal
from fleetlet.service.states import UnitStatus
from fleetlet.units.model import UnitFile

OWNER = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HELLO = UnitFile.from_options([("Service", "ExecStart", "/bin/true")])
RUNNING = UnitStatus("hello.service", HELLO.hash, active="active", sub="running", container_id="4f3a2b1c0d9e")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def two_members(
    asker: StaticView, owner: StaticView
) -> AsyncIterator[tuple[TestClient[Any, Any], TestClient[Any, Any]]]:
    """The asking member and the owner, over one registry where hello.service is placed on OWNER."""
    async with AsyncExitStack() as stack:
        registry = await stack.enter_async_context(MemoryRegistry(ManualClock()))
        await registry.put_unit("hello.service", HELLO, desired_state="launched")
        await registry.set_machine("hello.service", OWNER)
        owner_client = await stack.enter_async_context(TestClient(TestServer(fleet_v1_app(registry, view=owner))))
        asker.members[OWNER] = str(owner_client.make_url("")).rstrip("/")
        asker_client = await stack.enter_async_context(TestClient(TestServer(fleet_v1_app(registry, view=asker))))
        yield asker_client, owner_client


async def test_status_comes_from_the_machine_that_runs_the_unit() -> None:
    async with two_members(StaticView(), StaticView(statuses={"hello.service": RUNNING})) as (asker, _):
        resp = await asker.get("/v1/units/hello.service/status")
        assert resp.status == 200
        doc = await resp.json()
        assert (doc["activeState"], doc["containerID"]) == ("active", "4f3a2b1c0d9e")


async def test_a_forwarded_request_is_answered_where_it_lands_never_forwarded_back() -> None:
    """Two members each thinking the other runs the unit: one hop, then an answer from what is known there."""
    owner = StaticView()
    async with two_members(StaticView(), owner) as (asker, _):
        owner.members[OWNER] = str(asker.make_url("")).rstrip("/")  # the owner wrongly points back
        resp = await asker.get("/v1/units/hello.service/status")
        assert resp.status == 200
        assert "activeState" not in await resp.json()  # the owner reports no state of it: answered, not looped


async def test_the_journal_is_relayed_from_the_owner() -> None:
    journal = MemoryJournal("hello.service", ManualClock())
    journal.write("hello from the owner", "stdout")
    async with two_members(StaticView(), StaticView(journals={"hello.service": journal})) as (asker, _):
        resp = await asker.get("/v1/units/hello.service/journal")
        assert resp.status == 200
        assert "hello from the owner" in await resp.text()


async def test_an_owner_that_cannot_be_reached_is_a_502_with_a_reason() -> None:
    view = StaticView(members={OWNER: "http://127.0.0.1:9"})
    async with MemoryRegistry(ManualClock()) as registry:
        await registry.put_unit("hello.service", HELLO, desired_state="launched")
        await registry.set_machine("hello.service", OWNER)
        async with TestClient(TestServer(fleet_v1_app(registry, view=view))) as client:
            resp = await client.get("/v1/units/hello.service/status")
            assert resp.status == 502
            assert "cannot be reached" in (await resp.json())["error"]["message"]
