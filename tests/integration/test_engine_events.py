"""EngineEvents on a real engine: deaths from the ``/events`` stream, with their exit code and the OOM killer's part,
and none lost when the daemon restarts under the subscription."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from fleetlet.clock import SystemClock
from fleetlet.exec.docker_runtime import DockerRuntime
from fleetlet.exec.engine_events import EngineEvents
from tests.integration.conftest import PrivateDockerd

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MEMORY_LIMIT = 16 * 1024 * 1024


@pytest.fixture
async def hub(docker: DockerRuntime) -> AsyncIterator[EngineEvents]:
    events = EngineEvents(docker, SystemClock())
    async with anyio.create_task_group() as tg:
        await tg.start(events.run)
        yield events
        tg.cancel_scope.cancel()


def body(command: Sequence[str], labels: dict[str, str], **host_config: Any) -> dict[str, Any]:
    return {
        "Image": "busybox",
        "Cmd": list(command),
        "Labels": labels,
        "HostConfig": {"NetworkMode": "none", **host_config},
    }


async def test_a_die_comes_with_its_exit_code(
    docker: DockerRuntime, hub: EngineEvents, container_labels: dict[str, str]
) -> None:
    container = await docker.create(body(["sh", "-c", "exit 3"], container_labels))
    death = hub.watch(container)  # before the start: the death can only come from the stream
    await docker.start(container)
    with anyio.fail_after(30):
        await death.wait()
    assert (death.exit_code, death.oom_killed) == (3, False)
    assert hub.watched == 0
    # Asked again once it has ended, the inspection answers at once.
    again = await hub.death_of(container)
    assert (again.ended, again.exit_code) == (True, 3)


async def test_an_oom_kill_is_told_apart(
    docker: DockerRuntime, hub: EngineEvents, container_labels: dict[str, str]
) -> None:
    # dd's 64 MiB buffer cannot fit in 16 MiB without swap: the kernel's OOM killer ends it.
    command = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    container = await docker.create(body(command, container_labels, Memory=MEMORY_LIMIT, MemorySwap=MEMORY_LIMIT))
    if (await docker.inspect_raw(container))["HostConfig"].get("Memory") != MEMORY_LIMIT:
        pytest.skip("this engine cannot enforce memory limits (it dropped --memory)")
    death = hub.watch(container)
    await docker.start(container)
    with anyio.fail_after(30):
        await death.wait()
    assert (death.exit_code, death.oom_killed) == (137, True)
    assert (await docker.inspect(container)).oom_killed


@pytest.mark.parametrize("crash", [pytest.param(False, id="stopped"), pytest.param(True, id="crashed")])
async def test_a_death_across_a_daemon_restart_is_not_lost(private_dockerd: PrivateDockerd, crash: bool) -> None:
    async with DockerRuntime(private_dockerd.url) as engine, anyio.create_task_group() as tg:
        hub = EngineEvents(engine, SystemClock())
        await tg.start(hub.run)
        command = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        containers = [await engine.create(body(command, {})) for _ in range(3)]
        for container in containers:
            await engine.start(container)
        deaths = [await hub.death_of(container) for container in containers]

        await private_dockerd.stop(crash=crash)  # its containers go with it: stopped by it, or by the next one
        await private_dockerd.start()
        with anyio.fail_after(30):
            for death in deaths:
                await death.wait()

        # The trap exits 0 on the SIGTERM that stopped it, from the dying daemon or from the next one.
        assert [(d.exit_code, d.oom_killed) for d in deaths] == [(0, False)] * 3
        assert hub.watched == 0
        # The subscription is back: a new container's death still arrives.
        survivor = await engine.create(body(["sh", "-c", "exit 4"], {}))
        death = hub.watch(survivor)
        await engine.start(survivor)
        with anyio.fail_after(30):
            await death.wait()
        assert death.exit_code == 4
        tg.cancel_scope.cancel()
