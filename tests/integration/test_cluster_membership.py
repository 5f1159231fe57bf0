"""An agent in a cluster: a second member joins it over real websockets, is placed on, dies, is refused a key.

The agent is a whole embedded node (``fleetlet.Agent`` on the real Docker engine, serving its API and
``/v1/gossip`` on 127.0.0.1); the other member is a bare gossiper with its own ``/v1/gossip`` server, standing for
a second machine (``--join`` of a full agent waits for the remote registry). Every wait is for an event of the
agent's own hub, bounded in time, never a sleep.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from fleetlet import Agent, AgentConfig, AgentStartupError, load_unit
from fleetlet.clock import SystemClock
from fleetlet.cluster.errors import GossipRefused
from fleetlet.cluster.gossiper import Gossiper
from fleetlet.cluster.records import MachineRecord
from fleetlet.cluster.websocket import GossipEndpoint, WebSocketDialer
from fleetlet.events.hub import EventHub
from fleetlet.events.model import Event
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.registry.etcd_settings import parse_etcd_url

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BOUND = 15.0
UNIT = "peer-only.service"
PEER_UNIT = """[Service]
ExecStart=/usr/bin/docker run --rm busybox true

[X-Fleet]
MachineMetadata=group=peer
"""


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fc-", dir="/tmp"))  # short: a unix socket's path is at most 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def agent_config(state_dir: Path, docker: DockerRuntime, **changes: object) -> AgentConfig:
    settings: dict[str, object] = {
        "machine_id": uuid.uuid4().hex,
        "host": "127.0.0.1",
        "port": 0,
        "docker_url": docker.url,
        "metadata": {"group": "server"},
        **changes,
    }
    return AgentConfig(state_dir, **settings)  # type: ignore[arg-type]


@asynccontextmanager
async def peer(seed: str, key: bytes | None = None) -> AsyncIterator[tuple[Gossiper, web.AppRunner]]:
    """A second member with metadata group=peer, serving /v1/gossip on 127.0.0.1, not yet joined."""
    async with AsyncExitStack() as stack:
        dialer = WebSocketDialer(key)
        stack.push_async_callback(dialer.aclose)
        machine_id = uuid.uuid4().hex
        gossiper = Gossiper(MachineRecord(machine_id, ""), dialer, SystemClock(), seeds=(seed,))
        stack.push_async_callback(gossiper.aclose)  # the links its join() dialed: before the dialer closes
        endpoint = GossipEndpoint(gossiper, key)
        app = web.Application()
        app.add_routes(endpoint.routes())
        app.on_shutdown.append(endpoint.close)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        address = f"http://127.0.0.1:{runner.addresses[0][1]}"
        gossiper.set_record(MachineRecord(machine_id, address, metadata={"group": "peer"}))
        yield gossiper, runner


async def next_event(hub: EventHub, after: int, wanted: Callable[[Event], bool]) -> Event:
    """The first event after index ``after`` that is ``wanted``, as the hub's subscribers get them."""
    subscription = hub.subscribe(after)
    with anyio.fail_after(BOUND):
        while True:
            for event in await subscription.next_batch():
                if wanted(event):
                    return event


def url(agent: Agent) -> str:
    assert agent.address is not None
    return f"http://127.0.0.1:{agent.address[1]}"


async def test_a_member_joins_is_placed_on_and_its_death_unplaces_its_unit(
    state_dir: Path, docker: DockerRuntime
) -> None:
    async with Agent(agent_config(state_dir, docker)) as agent, agent.client() as fleet:
        async with peer(url(agent)) as (other, runner), anyio.create_task_group() as tg:
            start = agent.events.last_index
            assert await other.join()
            joined = await next_event(
                agent.events, start, lambda e: (e.topic, e.type, e.key) == ("machine", "joined", other.id)
            )
            assert joined.payload["metadata"] == {"group": "peer"}
            machines = {m.id: dict(m.metadata) for m in await fleet.machines()}
            assert machines == {agent.machine_id: {"group": "server"}, other.id: {"group": "peer"}}

            running = anyio.CancelScope()

            async def gossip() -> None:
                with running:
                    await other.run()

            tg.start_soon(gossip)
            # Only the other member matches: the agent's engine places the unit there.
            mark = agent.events.last_index
            await fleet.create_unit(UNIT, load_unit(PEER_UNIT, UNIT).file, "launched")
            placed = await next_event(agent.events, mark, lambda e: (e.topic, e.key) == ("schedule", UNIT))
            assert (placed.type, placed.payload["machineID"]) == ("placed", other.id)

            # It dies without a word (its rounds end, its port closes): declared dead, its unit has nowhere to go.
            mark = agent.events.last_index
            running.cancel()
            await runner.cleanup()
            dead = await next_event(agent.events, mark, lambda e: (e.topic, e.type) == ("machine", "dead"))
            assert dead.key == other.id
            unplaced = await next_event(agent.events, mark, lambda e: (e.topic, e.key) == ("schedule", UNIT))
            assert unplaced.type == "unplaced"
            assert unplaced.payload["previousMachineID"] == other.id
            assert [m.id for m in await fleet.machines()] == [agent.machine_id]
            explanation = await fleet.explain(UNIT)
            assert explanation.report.machine_id is None
            await fleet.destroy(UNIT)


async def test_a_member_without_the_cluster_key_is_refused(state_dir: Path, docker: DockerRuntime) -> None:
    key_file = state_dir / "cluster.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    async with Agent(agent_config(state_dir, docker, cluster_key=key_file)) as agent, agent.client() as fleet:
        async with peer(url(agent), key=None) as (other, _):
            with pytest.raises(GossipRefused, match="did not prove the cluster key"):
                await other.join()
        async with peer(url(agent), key=b"0123456789abcdef0123456789abcdef") as (trusted, _):
            assert await trusted.join()
        ids = {m.id for m in await fleet.machines()}
        assert other.id not in ids
        assert trusted.id in ids


async def test_a_short_cluster_key_and_a_join_with_nobody_to_join_are_refused_at_start(
    state_dir: Path, docker: DockerRuntime
) -> None:
    key_file = state_dir / "short.key"
    key_file.write_text("short\n")
    with pytest.raises(AgentStartupError, match="too short"):
        async with Agent(agent_config(state_dir, docker, cluster_key=key_file)):
            pass
    with pytest.raises(AgentStartupError, match="cannot join: no member answered where the registry is"):
        async with Agent(agent_config(state_dir, docker, join=("http://127.0.0.1:9",))):
            pass
    with pytest.raises(AgentStartupError, match="--join needs --listen"):
        async with Agent(agent_config(state_dir, docker, host=None, join=("http://127.0.0.1:9",))):
            pass
    with pytest.raises(AgentStartupError, match="--registry etcd:// needs --listen"):
        async with Agent(agent_config(state_dir, docker, host=None, etcd=parse_etcd_url("etcd://127.0.0.1:9"))):
            pass
