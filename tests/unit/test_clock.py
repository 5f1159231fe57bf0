"""move_on_after on either clock: the block is cancelled when the time is up, and ``expired`` says so."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from fleetlet.clock import Clock, ManualClock, SystemClock, move_on_after


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_on_the_manual_clock_the_block_ends_when_the_clock_passes_the_deadline() -> None:
    clock = ManualClock()
    outcome: list[bool] = []

    async def block() -> None:
        async with move_on_after(clock, 5) as deadline:
            await anyio.sleep_forever()
        outcome.append(deadline.expired)

    async with anyio.create_task_group() as tg:
        tg.start_soon(block)
        await clock.settle()
        clock.advance(4.9)
        await clock.settle()
        assert outcome == []
        clock.advance(0.1)
        await clock.settle()
    assert outcome == [True]


@pytest.mark.anyio
async def test_on_the_system_clock_the_block_ends_at_the_event_loops_deadline() -> None:
    # A real deadline, but no sleep: the block waits for ever, and the event loop's clock ends it.
    started = anyio.current_time()
    async with move_on_after(SystemClock(), 0.01) as deadline:
        await anyio.sleep_forever()
    assert deadline.expired
    assert anyio.current_time() - started >= 0.01


@pytest.mark.anyio
@pytest.mark.parametrize("clock", [ManualClock(), SystemClock()], ids=["manual", "system"])
async def test_a_block_that_finishes_in_time_has_not_expired_and_its_errors_come_out_as_raised(clock: Clock) -> None:
    async with move_on_after(clock, 5) as deadline:
        await anyio.lowlevel.checkpoint()
    assert not deadline.expired
    async with move_on_after(clock, math.inf) as deadline:
        await anyio.lowlevel.checkpoint()
    assert not deadline.expired
    with pytest.raises(KeyError):
        async with move_on_after(clock, 5):
            raise KeyError("x")


@pytest.mark.anyio
async def test_an_outer_cancellation_is_not_taken_for_the_deadline() -> None:
    with anyio.CancelScope() as outer:
        async with move_on_after(SystemClock(), 5) as deadline:
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert not deadline.expired
