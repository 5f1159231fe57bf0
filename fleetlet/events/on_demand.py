"""A task that runs only while somebody wants it: started by the first holder, stopped a while after the last.

An agent on etcd follows the whole registry for its event stream only while a subscriber (or an embedding program)
wants unit and schedule events: following it always would deliver every placement decision for every machine to
every agent, which is what the reconcilers were made not to read. :class:`OnDemand` runs such a task for as long as
at least one holder holds it, and for ``linger`` seconds after the last leaves, so that a client reconnecting (or a
CLI run after another) does not make the task read everything again each time.

A holder waits until the task has started (for the registry feed: read the registry and told the hub what changed
while it was stopped) before its block runs. A task that cannot start with one of the ``failures`` given, or that
ends with one of them later, is logged as one warning and does not end the host: its holders go on without it, and
the next holder to come tries again. Nothing retries on its own: a registry that is down is not hammered.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Final, Literal, Protocol

import anyio
from anyio.abc import TaskStatus

from fleetlet.clock import Clock
from fleetlet.errors import sole

log = logging.getLogger("fleetlet.events")

DEFAULT_LINGER: Final = 30.0


class StartableTask(Protocol):
    def __call__(self, *, task_status: TaskStatus[None]) -> Awaitable[None]: ...


class OnDemand:
    """Runs ``task`` while held. Start :meth:`run` in a task group; holders use ``async with on_demand.held():``.

    ``name`` says what the task is in the log's warnings; ``failures``: the exceptions that end an attempt with a
    warning instead of ending :meth:`run` (and its task group) with them.
    """

    def __init__(
        self,
        task: StartableTask,
        clock: Clock,
        *,
        name: str,
        linger: float = DEFAULT_LINGER,
        failures: tuple[type[Exception], ...] = (),
    ) -> None:
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._task = task
        self._clock = clock
        self._name = name
        self._linger = linger
        self._failures = failures
        self._holders = 0
        self._state: Literal["idle", "starting", "running"] = "idle"
        self._wanted = anyio.Event()  # set when a holder finds the task idle: run() starts an attempt
        self._settled = anyio.Event()  # set when the next attempt has started or failed to
        self._unheld = anyio.Event()  # set when the last holder leaves
        self._lingering: anyio.CancelScope | None = None  # the wait after the last holder left

    @property
    def running(self) -> bool:
        """Whether the task has started and not ended."""
        return self._state == "running"

    @property
    def holders(self) -> int:
        return self._holders

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the task running while the block runs; the block starts once the task has started, or failed to."""
        self._holders += 1
        try:
            if self._lingering is not None:
                self._lingering.cancel()
            if self._state != "running":
                settled = self._settled
                if self._state == "idle":
                    self._wanted.set()
                await settled.wait()
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                self._unheld.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the task whenever a holder finds it idle, until cancelled."""
        task_status.started()
        try:
            while True:
                await self._wanted.wait()
                self._wanted = anyio.Event()
                await self._attempt()
        finally:
            self._state = "idle"
            self._settle()  # nobody waits for an attempt that will not come

    async def _attempt(self) -> None:
        self._state = "starting"
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await tg.start(self._guarded, tg.cancel_scope)
                except self._failures as exc:
                    log.warning("%s could not start (%s); it starts again when next wanted", self._name, exc)
                    return
                finally:
                    self._settle()
                self._state = "running"
                await self._until_unwanted()
                # Idle from here: a holder coming while the task is being stopped asks for a new run, rather than
                # going in on this one.
                self._state = "idle"
                tg.cancel_scope.cancel()
        finally:
            self._state = "idle"

    async def _guarded(self, attempt: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
        """Run the task; once started, a failure of ``failures`` ends the attempt (a warning), not the host."""
        status = _Status(task_status)
        try:
            await self._task(task_status=status)
        except Exception as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            if not status.reported:
                raise failure from None  # as it is, for the attempt to catch from start()
            log.warning("%s stopped (%s); it starts again when next wanted", self._name, failure)
        finally:
            if status.reported:
                # Marked before the attempt ends, so that a holder coming meanwhile asks for a new one.
                self._state = "idle"
                attempt.cancel()

    def _failure(self, exc: Exception) -> Exception | None:
        """The failure of ``failures`` that ``exc`` is (or is all a task group raised), else None."""
        return sole(exc, self._failures) if self._failures else None

    async def _until_unwanted(self) -> None:
        """Return once nobody has held the task for ``linger`` seconds."""
        while True:
            while self._holders:
                self._unheld = anyio.Event()
                await self._unheld.wait()
            with anyio.CancelScope() as lingering:
                self._lingering = lingering
                try:
                    await self._clock.sleep(self._linger)
                finally:
                    self._lingering = None
                return
            # A holder came while lingering: wait for the last to leave again.

    def _settle(self) -> None:
        settled, self._settled = self._settled, anyio.Event()
        settled.set()


class _Status(TaskStatus[None]):
    """The task's ``task_status``: passes the start on, and remembers it happened."""

    def __init__(self, status: TaskStatus[None]) -> None:
        self._status = status
        self.reported = False

    def started(self, value: None = None) -> None:
        self.reported = True
        self._status.started(value)
