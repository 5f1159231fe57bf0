"""Group commit: concurrent writers share one transaction and one fsync, each still told its own outcome.

A durable commit costs an fsync (milliseconds on real disks); a write is acknowledged only after its commit. When
writes arrive while a commit is running, they queue; when it ends, the first queued writer becomes the committer and
commits everything queued so far in one transaction. Nothing is acknowledged before it is durable, so durability is
the same as one commit per write, at a fraction of the fsyncs.

There is no background task: the committer is always one of the waiting writers (leadership is handed over as a
batch ends), so the registry needs no task group of its own and a write cancelled while queued is simply dropped.
Each operation runs inside a savepoint, so one failed condition rolls back that operation only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")
Tx = TypeVar("Tx")


@dataclass(eq=False, slots=True)
class Operation(Generic[Tx]):
    """One writer's work, run in the commit thread with the batch's transaction; its outcome, once committed."""

    work: Callable[[Tx], Any]
    woken: anyio.Event = field(default_factory=anyio.Event)
    lead: bool = False  # woken to commit the next batch, not because its own outcome is known
    done: bool = False
    result: Any = None
    error: Exception | None = None


class GroupCommitter(Generic[Tx]):
    """Queues operations and runs them in batches through ``commit(batch)``, in a worker thread, one batch at a time.

    ``commit`` must set ``result`` or ``error`` on every operation of the batch, and set ``error`` on all of them
    if the transaction as a whole failed.
    """

    def __init__(self, commit: Callable[[list[Operation[Tx]]], None], after_commit: Callable[[], None]) -> None:
        self._commit = commit
        self._after_commit = after_commit
        self._pending: list[Operation[Tx]] = []
        self._committing = False
        self._idle = anyio.Event()
        self._idle.set()

    async def run(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in the next batch and return its result once that batch is durable, or raise its error."""
        op: Operation[Tx] = Operation(work)
        self._pending.append(op)
        if self._committing:
            resumed = False
            try:
                await op.woken.wait()
                resumed = True
            finally:
                if not resumed and any(queued is op for queued in self._pending):
                    # Cancelled while queued: never written. If it had just been made committer, pass that on.
                    self._pending = [queued for queued in self._pending if queued is not op]
                    if op.lead:
                        self._hand_over()
        else:
            self._committing = True
            self._idle = anyio.Event()
        if not op.done:
            # This writer commits: shielded, so the batch's other writers get their outcome and the next committer
            # is named even if this one is cancelled meanwhile (the thread would run to its end anyway).
            with anyio.CancelScope(shield=True):
                await self._commit_pending()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]  # ``work`` returned a T

    async def _commit_pending(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await anyio.to_thread.run_sync(self._commit, batch)
        except Exception as exc:  # a bug in ``commit``: every writer of the batch hears of it
            for op in batch:
                op.result, op.error = None, exc
        finally:
            for op in batch:
                op.done = True
                op.woken.set()
            self._hand_over()
            self._after_commit()

    def _hand_over(self) -> None:
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            successor.woken.set()
        else:
            self._committing = False
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until no batch is being committed and none is queued."""
        while self._committing:
            await self._idle.wait()
