"""Many long calls at once (each running unit waits on its container and follows its logs) never starve others."""

from __future__ import annotations

import anyio
import pytest

from tests.runtime_contract import SLEEPER, Harness

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HELD = 150  # more than aiohttp's default pool of 100 connections


async def test_a_request_is_answered_while_many_long_calls_hold_connections(harness: Harness) -> None:
    runtime = harness.runtime
    container = await harness.run(SLEEPER)
    statuses: list[int] = []

    async def wait() -> None:
        statuses.append(await runtime.wait(container))

    async with anyio.create_task_group() as tg:
        for _ in range(HELD):
            tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(10):
            await runtime.ping()
            assert (await runtime.inspect(container)).running
            await runtime.kill(container, "SIGKILL")
    assert statuses == [137] * HELD
