"""Following the etcd registry's changes: one etcd watch stream at a time, resumed after every break.

A stream that breaks (a member restarting, a connection cut) is opened again, on the next member if that one
cannot serve, from the last change delivered (:class:`~fleetlet.registry.watch.Position`), so the receiver sees
every change once, in order. A stream says nothing while nothing changes, so silence cannot tell a quiet registry
from a member that is gone or cut off from its cluster: beside each stream a probe asks etcd for its revision every
``probe`` seconds, and a failed probe breaks the stream.

A revision older than the history kept raises :class:`RevisionCompacted`: older than the registry's own
``history`` (checked at each connection, as the other backends check), or than what etcd has compacted.

A unit's put carries its text (:mod:`~fleetlet.registry.etcd_texts`): taken from the same etcd message when the
txn wrote it, else from the cache, else read as of the event's revision; the events of one message are resolved
together, so a message costs one read at most (a txn of ranges), and a text etcd no longer keeps at that revision
(compacted) is RevisionCompacted too.
"""

from __future__ import annotations

import logging

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.registry.errors import RegistryError, RegistryUnavailable, RevisionCompacted
from fleetlet.registry.etcd_gateway import CompactedError, Json, b64, key_value, number
from fleetlet.registry.etcd_keyspace import Keyspace
from fleetlet.registry.etcd_layout import from_etcd, to_etcd
from fleetlet.registry.etcd_texts import Texts
from fleetlet.registry.model import Change
from fleetlet.registry.watch import Position

log = logging.getLogger(__name__)

# Pauses between a broken watch's reconnections (real time: this is etcd's network, not the registry's clock).
RECONNECT_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)
PROBE_SECONDS = 5.0


async def follow(
    keys: Keyspace,
    texts: Texts,
    position: Position,
    prefix: str,
    sink: MemoryObjectSendStream[Change],
    *,
    history: int | None,
    probe: float = PROBE_SECONDS,
) -> None:
    """Stream changes under ``prefix`` into ``sink`` across broken connections, until the receiver goes away."""
    failures = 0
    while True:
        try:
            await _stream(keys, texts, position, prefix, sink, history, probe)
            failures = 0  # etcd ended the stream (a member shutting down): reconnect at once
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the receiver closed its end
        except RegistryUnavailable as exc:
            if failures == 0:
                log.warning("etcd watch broken (%s); reconnecting", exc.reason)
            await anyio.sleep(RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)])
            failures += 1


async def _stream(
    keys: Keyspace,
    texts: Texts,
    position: Position,
    prefix: str,
    sink: MemoryObjectSendStream[Change],
    history: int | None,
    probe_seconds: float,
) -> None:
    after = position.resume_after
    if history is not None:
        compacted = from_etcd(await keys.revision()) - history
        if after < compacted:
            raise RevisionCompacted(after, compacted)
    # The changes of an interrupted write that were delivered already: etcd sends them again first.
    interrupted, to_skip = position.revision, position.delivered
    request = {
        "create_request": {
            "key": b64(keys.layout.key(prefix)),
            "range_end": b64(keys.layout.range_end(prefix)),
            "start_revision": str(to_etcd(after) + 1),
        }
    }

    async def deliver(message: Json) -> None:
        nonlocal to_skip
        if message.get("canceled"):
            compact = number(message, "compact_revision")
            if compact:
                # etcd may have dropped deletions at the compaction revision itself: count it as gone.
                raise RevisionCompacted(after, from_etcd(compact))
            reason = message.get("cancel_reason", "")
            raise RegistryUnavailable(keys.gateway.url, f"etcd cancelled the watch: {reason}")
        events = [(key_value(e.get("kv", {})), e.get("type") == "DELETE") for e in message.get("events", ())]
        try:
            found = await texts.for_events(events)
        except CompactedError as exc:
            # etcd does not always say where it compacted; it is past this message's first event at least.
            first = min(from_etcd(kv.mod_revision) for kv, _ in events)
            raise RevisionCompacted(position.resume_after, max(first, from_etcd(exc.compact_revision))) from exc
        for kv, deleted in events:
            change = keys.layout.change(kv, deleted, found)
            if change is None:
                continue  # an internal key
            if to_skip and change.revision == interrupted:
                to_skip -= 1
                continue
            await sink.send(change)
            position.delivered_one(change.revision)

    # The stream and its probe: whichever ends first ends the other, and its error, if any, is the stream's (in a
    # list rather than raised, which the task group would wrap in an ExceptionGroup).
    failures: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def stream() -> None:
            try:
                await keys.gateway.stream("/v3/watch", request, deliver)
            except CompactedError as exc:  # sent as an error rather than as a cancelled watch
                failures.append(RevisionCompacted(after, from_etcd(exc.compact_revision)))
            except Exception as exc:
                failures.append(exc)
            tg.cancel_scope.cancel()

        async def probe() -> None:
            while True:
                await anyio.sleep(probe_seconds)
                try:
                    await keys.revision()
                except RegistryError as exc:  # unavailable: reconnect; closed: the end
                    failures.append(exc)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stream)
        tg.start_soon(probe)
    if failures:
        raise failures[0]
