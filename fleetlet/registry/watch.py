"""Following a registry's changes: replay from a revision, then live, into the caller's memory stream.

A watch is a method that runs until cancelled and sends into a sink the caller owns the other end of, rather than
an async iterator: an async generator cannot safely hold a cancel scope or task group across ``yield``, and its
cleanup runs whenever the garbage collector gets to it. Run as ``tg.start_soon(registry.watch, rev, send)``, the
watch lives and dies inside the caller's task group, and a full sink slows the watch down (backpressure) instead of
buffering without bound.

The watcher does not get a private queue of live changes: it re-reads the backend's change log after the last
revision it sent, whenever the :class:`Notifier` says a write committed. A watcher that falls behind the kept
history therefore gets :class:`RevisionCompacted`, as it would from etcd, rather than growing memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.registry.errors import RegistryClosed
from fleetlet.registry.model import Change

# Changes read from the log at once: bounds a slow watcher's memory while it drains a long replay.
BATCH = 512


class Notifier:
    """Wakes watchers after each committed write. Take :meth:`event` before reading, wait on it after."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.closed = False

    def event(self) -> anyio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def close(self) -> None:
        self.closed = True
        self._event.set()


# fetch(after, prefix, limit): changes with revision > after under prefix, oldest first, at most limit; raises
# RevisionCompacted when ``after`` is older than the history kept.
Fetch = Callable[[int, str, int], Awaitable[Sequence[Change]]]


async def follow(
    fetch: Fetch, notifier: Notifier, from_revision: int, sink: MemoryObjectSendStream[Change], prefix: str
) -> None:
    """Send every change after ``from_revision`` under ``prefix`` into ``sink``, then live ones, until cancelled.

    Returns quietly when the receiver closes its end; closes ``sink`` on the way out so the receiver's loop ends.
    """
    if from_revision < 0:
        raise ValueError("from_revision must be >= 0")
    after = from_revision
    async with sink:
        while True:
            if notifier.closed:
                raise RegistryClosed("the registry was closed")
            committed = notifier.event()  # before the read: a write landing after it sets this very event
            changes = list(await fetch(after, prefix, BATCH))
            full = len(changes) == BATCH
            if full and changes[0].revision != changes[-1].revision:
                # The batch may end inside a write: leave that write's changes for the next read, whole.
                last = changes[-1].revision
                while changes[-1].revision == last:
                    changes.pop()
            try:
                for change in changes:
                    await sink.send(change)
                    after = change.revision
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if not full:
                await committed.wait()


class Position:
    """Where a watch is: the last write it delivered changes of, and how many of that write's changes it delivered.

    For the backends whose watches reconnect (remote, etcd). A write's changes share its revision and arrive in a
    fixed order, so a watch broken in the middle of one resumes after the write before it and skips the changes of
    this one it already delivered.
    """

    def __init__(self, after: int) -> None:
        self.revision = after  # the revision of the last change delivered (``after``: none yet)
        self.delivered = 0  # changes delivered with that revision
        self._before = after  # the last revision every change of which was delivered

    @property
    def resume_after(self) -> int:
        return self._before if self.delivered else self.revision

    def delivered_one(self, revision: int) -> None:
        if revision != self.revision:
            self._before = self.revision
            self.revision = revision
            self.delivered = 0
        self.delivered += 1
