"""The unit supervisor: one actor per unit on this machine, driven by the reconciler's tasks.

Actors live in the supervisor's task group. Shutting down closes their mailboxes, which detaches them: running
containers keep running and the next agent's actors adopt them. Only ``aclose(purge=True)`` (fleet's ``--purge``)
stops the units first. Cancelling ``run`` detaches as well: a cancelled actor never stops its container.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.agent.node import Node
from fleetlet.agent.reconcile import CurrentUnit, Task
from fleetlet.clock import move_on_after
from fleetlet.service.actor import Mailbox, Reply, Start, Stop, UnitActor
from fleetlet.service.journal import Journal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import CheckedUnit

log = logging.getLogger(__name__)

# How long (on the node's clock) apply waits for an actor to answer a start or a stop before going on without
# the answer; the actor carries on regardless. A start may pull an image, so this is generous.
REPLY_SECONDS = 300.0


def _ignore(status: UnitStatus) -> None:
    """Publish nowhere."""


def _ignore_unload(unit: str) -> None:
    """Tell nobody."""


@dataclass(eq=False, slots=True)
class _Entry:
    """One loaded unit: its actor, mailbox, latest status, and the desired revision it was last started for."""

    actor: UnitActor
    mailbox: Mailbox
    status: UnitStatus
    journal: Journal
    done: anyio.Event = field(default_factory=anyio.Event)
    started_for: int | None = None


class Supervisor:
    """Owns this machine's unit actors; :meth:`apply` carries out a plan from :func:`fleetlet.agent.reconcile.plan`.

    ``apply`` and ``aclose`` are serialized, so a plan is never carried out half-way through a shutdown.
    ``publish`` gets every status an actor publishes; ``on_unload`` hears of a unit unloaded from this machine once
    its actor has gone (not of a replacement, whose new actor publishes next, nor of a shutdown's detaching).
    """

    def __init__(
        self,
        node: Node,
        journals: Callable[[str], Journal],
        publish: Callable[[UnitStatus], None] = _ignore,
        *,
        on_unload: Callable[[str], None] = _ignore_unload,
        reply_seconds: float = REPLY_SECONDS,
    ) -> None:
        self._node = node
        self._journals = journals
        self._publish = publish
        self._on_unload = on_unload
        self._reply_seconds = reply_seconds
        self._entries: dict[str, _Entry] = {}
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self._closing = anyio.Event()
        self._closed = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the actors until :meth:`aclose` or cancellation; either way every actor detaches."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                try:
                    await self._closing.wait()
                finally:
                    self._tg = None
                    self._detach_all()
        finally:
            self._closed.set()

    async def aclose(self, *, purge: bool = False) -> None:
        """Shut down: detach every actor (containers keep running), or with ``purge`` stop every unit first."""
        async with self._lock:
            if purge:
                for name in sorted(self._entries):
                    await self._ask(name, self._entries[name], Stop())
            self._closing.set()
        if self._tg is not None:  # running: wait until every actor has detached
            await self._closed.wait()

    def current(self) -> dict[str, CurrentUnit]:
        """What the actors last reported, in the reconciler's terms."""
        return {
            name: CurrentUnit(
                name,
                entry.status.hash,
                entry.status.active,
                entry.status.sub,
                entry.status.result,
                entry.started_for,
            )
            for name, entry in self._entries.items()
        }

    def statuses(self) -> list[UnitStatus]:
        """The latest status each loaded unit's actor published, in name order."""
        return [self._entries[name].status for name in sorted(self._entries)]

    def status(self, name: str) -> UnitStatus | None:
        """The latest status of ``name``'s actor; None when the unit is not loaded here."""
        entry = self._entries.get(name)
        return entry.status if entry is not None else None

    def journal(self, name: str) -> Journal | None:
        """The journal ``name``'s actor writes, which followers can follow; None when it is not loaded here."""
        entry = self._entries.get(name)
        return entry.journal if entry is not None else None

    async def apply(self, tasks: Sequence[Task], units: Mapping[str, CheckedUnit]) -> None:
        """Carry out ``tasks`` in order; ``units`` holds the checked unit for every load and replace.

        A task that fails is logged and skipped: the next plan, made from what then runs, tries again.
        """
        async with self._lock:
            for task in tasks:
                log.info("%s: %s", task.kind, task.reason)
                try:
                    await self._apply(task, units)
                except Exception:  # one unit's trouble must not stop the rest of the plan
                    log.exception("%s of %s failed", task.kind, task.unit)

    async def _apply(self, task: Task, units: Mapping[str, CheckedUnit]) -> None:
        name = task.unit
        entry = self._entries.get(name)
        match task.kind:
            case "load":
                if entry is None:
                    await self._load(units[name])
            case "replace":
                if entry is not None:
                    await self._unload(name, entry)
                await self._load(units[name])
            case "unload":
                if entry is not None:
                    await self._unload(name, entry)
                    self._on_unload(name)
            case "start":
                if entry is not None:
                    entry.started_for = task.revision
                    await self._ask(name, entry, Start())
            case "stop":
                if entry is not None:
                    await self._ask(name, entry, Stop())

    async def _load(self, unit: CheckedUnit) -> None:
        if self._tg is None:
            raise RuntimeError("the supervisor is not running")
        name = unit.name.full
        journal = self._journals(name)
        entry: _Entry | None = None

        def published(status: UnitStatus) -> None:
            # An actor being replaced may still publish on its way out: only the current one counts.
            if entry is not None and self._entries.get(name) is entry:
                entry.status = status
            self._publish(status)

        actor = self._node.actor(unit, journal, publish=published)
        done = anyio.Event()
        # The actor adopts a running container of this version before it hands back its mailbox.
        mailbox = await self._tg.start(self._host, actor, done)
        entry = _Entry(actor, mailbox, actor.status, journal, done)
        self._entries[name] = entry

    @staticmethod
    async def _host(actor: UnitActor, done: anyio.Event, *, task_status: TaskStatus[Mailbox]) -> None:
        """Run one actor and say when it has detached, so a replacement never overlaps it."""
        try:
            await actor.run(task_status=task_status)
        finally:
            done.set()

    async def _unload(self, name: str, entry: _Entry) -> None:
        await self._ask(name, entry, Stop())
        del self._entries[name]
        entry.mailbox.close()
        async with move_on_after(self._node.clock, self._reply_seconds) as deadline:
            await entry.done.wait()
        if deadline.expired:
            log.warning("%s: the actor did not detach within %ss", name, self._reply_seconds)

    async def _ask(self, name: str, entry: _Entry, message: Start | Stop) -> None:
        reply: Reply[UnitStatus] = message.reply
        try:
            await entry.mailbox.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.warning("%s: the actor is gone", name)
            return
        # The status itself arrives through ``published``: a reply read late could be older than the latest one.
        async with move_on_after(self._node.clock, self._reply_seconds) as deadline:
            await reply.wait()
        if deadline.expired:
            log.warning("%s: no answer to %s within %ss", name, type(message).__name__.lower(), self._reply_seconds)

    def _detach_all(self) -> None:
        for entry in self._entries.values():
            entry.mailbox.close()
        self._entries.clear()
