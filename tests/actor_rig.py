"""One unit actor running over a given engine, process runner, clock and journal: shared by the fast tests (on
the fakes) and the integration tests (on Docker), so both drive the actor the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from fleetlet.agent.node import Node
from fleetlet.clock import Clock
from fleetlet.exec.engine_events import EngineEvents
from fleetlet.exec.runtime import ContainerRuntime
from fleetlet.exec.subprocess_runner import ProcessRunner
from fleetlet.service.actor import GetStatus, Mailbox, Message, Reply
from fleetlet.service.journal import Journal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import load_unit
from fleetlet.units.specifiers import MachineFacts


class StatusLog:
    """Everything an actor published, and a way to wait for the next publication."""

    def __init__(self) -> None:
        self.published: list[UnitStatus] = []
        self.changed = anyio.Event()

    def publish(self, status: UnitStatus) -> None:
        self.published.append(status)
        self.changed.set()
        self.changed = anyio.Event()


@dataclass
class Running:
    """A running actor: its mailbox, its journal, what it published, and a way to wait for a state."""

    mailbox: Mailbox
    journal: Journal
    log: StatusLog = field(default_factory=StatusLog)

    @property
    def published(self) -> list[UnitStatus]:
        return self.log.published

    async def ask(self, message: Message, *, within: float = 5.0) -> UnitStatus:
        reply: Reply[UnitStatus] = message.reply
        await self.mailbox.send(message)
        with anyio.fail_after(within):  # real seconds: only a bug (or a stuck engine) makes this wait
            return await reply.wait()

    async def status(self) -> UnitStatus:
        return await self.ask(GetStatus())

    async def until(self, active: str, sub: str, *, within: float) -> UnitStatus:
        """Wait (real time) until the actor publishes ``active/sub``."""
        with anyio.fail_after(within):
            while True:
                changed = self.log.changed
                current = await self.status()
                if (current.active, current.sub) == (active, sub):
                    return current
                await changed.wait()

    def messages(self) -> list[str]:
        return [entry.message for entry in self.journal.tail(10_000)]

    def states(self) -> list[str]:
        """Every active/sub published, consecutive repeats folded."""
        seen: list[str] = []
        for status in self.published:
            text = f"{status.active}/{status.sub}"
            if not seen or seen[-1] != text:
                seen.append(text)
        return seen


@asynccontextmanager
async def run_actor(
    text: str,
    name: str,
    *,
    runtime: ContainerRuntime,
    processes: ProcessRunner,
    clock: Clock,
    journal: Journal,
    machine_id: str,
    events: EngineEvents | None = None,
) -> AsyncIterator[Running]:
    """Run an actor for ``text`` until the block ends; then close its mailbox (detach: containers keep running).

    With ``events`` (a running hub), the main container's death comes from it rather than from a wait call.
    """
    unit = load_unit(text, name)
    node = Node(runtime, processes, clock, MachineFacts(machine_id=machine_id), events)
    log = StatusLog()
    actor = node.actor(unit, journal, publish=log.publish)
    async with anyio.create_task_group() as tg:
        running = Running(await tg.start(actor.run), journal, log)
        try:
            yield running
        finally:
            await running.mailbox.aclose()
