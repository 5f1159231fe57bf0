"""The sweep of orphan containers at agent start, over the fake engine."""

from __future__ import annotations

import anyio
import pytest

from fleetlet.agent.sweep import sweep_orphans
from fleetlet.clock import ManualClock
from fleetlet.exec.fake_runtime import Behaviour, FakeRuntime
from fleetlet.exec.runtime import LABEL_MACHINE, LABEL_UNIT

pytestmark = pytest.mark.anyio

ME = "1a2b3c4d" + "0" * 24


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def container(runtime: FakeRuntime, name: str, owner: str, unit: str, *, start: bool = True) -> str:
    body = {"Image": "busybox", "Cmd": ["sleep", "1000"], "Labels": {LABEL_MACHINE: owner, LABEL_UNIT: unit}}
    cid = await runtime.create(body, name)
    if start:
        await runtime.start(cid)
    return cid


async def test_only_this_machines_containers_of_units_not_loaded_go() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=lambda body: Behaviour(trap={"SIGTERM": 0}))
    await container(runtime, "kept", ME, "loaded.service")
    await container(runtime, "orphan", ME, "destroyed.service")
    await container(runtime, "stopped-orphan", ME, "unloaded.service", start=False)
    await container(runtime, "foreground", "run/" + ME, "destroyed.service")
    await container(runtime, "other-machine", "9f8e7d6c" + "0" * 24, "destroyed.service")

    async with anyio.create_task_group() as tg:
        swept: list[str] = []

        async def sweep() -> None:
            swept.extend(await sweep_orphans(runtime, ME, lambda unit: unit == "loaded.service"))

        tg.start_soon(sweep)
        await clock.settle()
    assert sorted(swept) == ["destroyed.service", "unloaded.service"]
    assert sorted(c.name for c in await runtime.list()) == ["foreground", "kept", "other-machine"]
    assert all(c.running for c in await runtime.list())
