"""Gossip over real aiohttp websockets on loopback: members join and spread state, keys are checked, shutdown closes.

Real sockets, real clock: the gossip interval is short, and a test waits for what the gossipers report, bounded by
fail_after, never for a time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from aiohttp import web

from fleetlet.clock import SystemClock
from fleetlet.cluster.errors import GossipRefused
from fleetlet.cluster.gossiper import Gossiper, GossipSettings
from fleetlet.cluster.membership import Status
from fleetlet.cluster.records import MachineRecord
from fleetlet.cluster.websocket import GossipEndpoint, WebSocketDialer

FAST = GossipSettings(interval=0.02, join_timeout=2.0)
KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def member(
    stack: AsyncExitStack, machine_id: str, seeds: tuple[str, ...] = (), key: bytes | None = None
) -> AsyncIterator[Gossiper]:
    """A gossiper serving /v1/gossip on 127.0.0.1 (port chosen), its address the URL it really listens on."""
    dialer = WebSocketDialer(key)
    stack.push_async_callback(dialer.aclose)
    # The address is known once the port is bound: the record is told it then, before any gossip.
    gossiper = Gossiper(MachineRecord(machine_id, ""), dialer, SystemClock(), settings=FAST, seeds=seeds,
                        on_event=CHANGES.poke, on_unit_state=CHANGES.poke)  # fmt: skip
    endpoint = GossipEndpoint(gossiper, key)
    app = web.Application()
    app.add_routes(endpoint.routes())
    app.on_shutdown.append(endpoint.close)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stack.push_async_callback(runner.cleanup)
    gossiper.set_record(MachineRecord(machine_id, f"http://127.0.0.1:{runner.addresses[0][1]}"))
    yield gossiper


class Changes:
    """Woken by every change a gossiper reports: a test waits for a condition without polling on a timer."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def poke(self, *_: object) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        with anyio.fail_after(seconds):
            while True:
                event = self._event
                if condition():
                    return
                await event.wait()


CHANGES = Changes()


@pytest.mark.anyio
async def test_members_gossip_over_websockets_and_see_a_stop() -> None:
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        a = await stack.enter_async_context(member(stack, "a"))
        await tg.start(a.run)
        b = await stack.enter_async_context(member(stack, "b", seeds=(a.record.address,)))
        assert await b.join()
        b_scope = anyio.CancelScope()

        async def run_b() -> None:
            with b_scope:
                await b.run()

        tg.start_soon(run_b)
        b.set_unit_state("hello.service", {"active": "active"})
        await CHANGES.until(lambda: list(a.unit_states()) == [("b", "hello.service", {"active": "active"})])
        assert a.membership.status("b") is Status.ALIVE
        await b.leave()
        await CHANGES.until(lambda: a.membership.status("b") is Status.LEFT)
        b_scope.cancel()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_wrong_cluster_key_is_refused_over_websockets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "fleetlet.cluster")
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(member(stack, "a", key=KEY))
        b = await stack.enter_async_context(member(stack, "b", seeds=(a.record.address,), key=None))
        with pytest.raises(GossipRefused, match="did not prove the cluster key") as refused:
            await b.join()
        assert refused.value.code == "no-key"
        assert any("refused gossip from machine b" in r.getMessage() for r in caplog.records)
        assert a.membership.record("b") is None


@pytest.mark.anyio
async def test_an_unreachable_seed_is_no_join_not_an_error() -> None:
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(member(stack, "b", seeds=("http://127.0.0.1:9",)))
        assert not await b.join()
