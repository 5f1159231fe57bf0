"""Unit texts in etcd: stored once by hash, shared by every unit with that text, deleted with their last reference.

Keys (:mod:`~fleetlet.registry.etcd_layout`): ``texts/<hash>`` holds a text, ``units/<name>`` names its text by
hash, and ``textrefs/<hash>/<unit>`` records that the unit references it. fleet kept a text as long as etcd did
(fleet issue #1290); here a text no unit references is deleted, in the very txn that removes its last reference.

The invariant every write keeps: ``units/<u>`` names hash H exactly when ``textrefs/H/<u>`` exists, and while any
``textrefs/H/*`` exists, ``texts/H`` exists. So a unit's text is always there, and an unreferenced text is not.

- A unit's record and its reference are created, moved and deleted in the same txn (:meth:`Texts.reference`,
  :meth:`Texts.release` give the operations): they cannot disagree.
- A txn that adds a reference makes sure of the text in that same txn: if the writer's read found no text it puts
  it; if the read found one, the txn compares that it still exists (a concurrent deletion fails the txn, and the
  writer reads again, finds no text, and puts it). Writers adding the same new text at once all put it, which is
  the same key with the same bytes: they never contend, and the text cannot be lost between them.
- A txn that removes a reference carries a nested txn deleting the text when no *other* reference is left: its
  compares say the ranges of ``textrefs/H/`` before and after the writer's own reference key are empty. etcd
  compares cannot count keys, but a compare over a range holds for every key in it and, on an empty range, is
  evaluated against an absent key; ``create_revision == 0`` thus holds exactly when the range is empty. etcd
  evaluates every compare of a txn, the nested ones too, against the state before any of its operations, and
  applies a txn whole between other txns: no reference can appear between the check and the deletion. So
  whichever writer removes the last reference, whatever the interleaving, sees no other and deletes the text,
  and a writer that removes one of several references leaves it. A deletion is never a separate, later write
  that could race with a new reference, and the nested txn's outcome does not fail the unit's write: replacing or
  deleting a unit never retries for the sake of a text.

A reference count inside the text record would be sound too, but every writer of a popular text (a template's
instances submitted at once) would then update that one key under a mod-revision compare, and all but one of
them would retry; a key per reference keeps writers of different units apart.

Reads: a text is read at the etcd revision its unit was read at (the unit's page, the watch event), where by the
invariant it exists, so a unit and its text are one snapshot even if the text is gone since. A text never changes
under its hash, so they are cached by hash, in a bounded LRU shared by reads and watches, and checked against the
hash when read from etcd.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from fleetlet.registry.codec import RegistryProtocolError
from fleetlet.registry.etcd_gateway import Json, KeyValue
from fleetlet.registry.etcd_keyspace import Keyspace, first_kv
from fleetlet.registry.etcd_layout import TEXTS_PREFIX, ref_key, refs_prefix, text_key
from fleetlet.registry.model import UNITS_PREFIX

CACHE_TEXTS = 1024
# etcd refuses a txn of more operations than --max-txn-ops, 128 by default: texts are read in batches that fit.
MAX_TXN_OPS = 128


class Texts:
    """The texts of one registry object's units: the operations that keep them, reads, and a cache by hash."""

    def __init__(self, keys: Keyspace, *, capacity: int = CACHE_TEXTS) -> None:
        if capacity < 1:
            raise ValueError("the text cache must hold at least one text")
        self._keys = keys
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._capacity = capacity

    # --- the cache -----------------------------------------------------------------------------------------------

    def remember(self, hash_: str, text: str) -> str:
        self._cache[hash_] = text
        self._cache.move_to_end(hash_)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return text

    def cached(self, hash_: str) -> str | None:
        text = self._cache.get(hash_)
        if text is not None:
            self._cache.move_to_end(hash_)
        return text

    # --- writes: operations for the unit's own txn ---------------------------------------------------------------

    def reference(self, unit: str, hash_: str, text: str, *, stored: bool) -> tuple[list[Json], list[Json]]:
        """The compares and operations that make ``unit`` reference its text; ``stored``: the writer's read found
        the text already in etcd (then it is not written again, only checked to be still there)."""
        keys = self._keys
        compare = [keys.exists(text_key(hash_))] if stored else []
        ops = [] if stored else [keys.put_op(text_key(hash_), text.encode("utf-8"))]
        ops.append(keys.put_op(ref_key(hash_, unit), b""))
        return compare, ops

    def release(self, unit: str, hash_: str) -> list[Json]:
        """The operations that drop ``unit``'s reference to a text, and the text with it if no other is left."""
        keys, layout = self._keys, self._keys.layout
        own = layout.key(ref_key(hash_, unit))
        no_other = [
            keys.range_empty(layout.key(refs_prefix(hash_)), own),
            keys.range_empty(own + b"\0", layout.range_end(refs_prefix(hash_))),  # the keys after own
        ]
        return [keys.delete_op(ref_key(hash_, unit)), keys.txn_op(no_other, [keys.delete_op(text_key(hash_))])]

    # --- reads ---------------------------------------------------------------------------------------------------

    async def read(self, wanted: Mapping[str, int]) -> dict[str, str]:
        """The texts of the hashes in ``wanted``, each read as of the etcd revision given for it (one where a unit
        naming it was read), in as few txns as etcd allows. CompactedError if etcd no longer keeps a revision."""
        found: dict[str, str] = {}
        missing: list[tuple[str, int]] = []
        for hash_, revision in wanted.items():
            text = self.cached(hash_)
            if text is None:
                missing.append((hash_, revision))
            else:
                found[hash_] = text
        keys = self._keys
        for start in range(0, len(missing), MAX_TXN_OPS):
            batch = missing[start : start + MAX_TXN_OPS]
            answer = await keys.txn([], [keys.get_op(text_key(h), etcd_revision=r) for h, r in batch])
            for index, (hash_, revision) in enumerate(batch):
                kv = first_kv(answer, index)
                if kv is None:  # the invariant says it cannot be: records of another program, or of another layout
                    raise RegistryProtocolError(f"no text {hash_} in etcd at revision {revision}, which a unit names")
                found[hash_] = self.remember(hash_, keys.layout.text(kv, hash_))
        return found

    async def for_events(self, events: Iterable[tuple[KeyValue, bool]]) -> dict[str, str]:
        """The texts of the units that watch events ``(kv, deleted)`` put, by hash.

        A text written in the same txn as its unit comes in the same events (etcd sends a revision's events
        together): it is taken from there. A unit put with a text stored earlier (a resubmit, another instance of
        a template) comes alone: its text is cached, or read as of the event's revision.
        """
        events = list(events)
        layout = self._keys.layout
        found: dict[str, str] = {}
        wanted: dict[str, int] = {}
        for kv, deleted in events:
            name = layout.name(kv.key)
            if name is not None and not deleted and name.startswith(TEXTS_PREFIX):
                hash_ = name[len(TEXTS_PREFIX) :]
                found[hash_] = self.remember(hash_, layout.text(kv, hash_))
        for kv, deleted in events:
            name = layout.name(kv.key)
            if name is not None and not deleted and name.startswith(UNITS_PREFIX):
                hash_ = layout.unit_hash(kv)
                if hash_ not in found:
                    wanted.setdefault(hash_, kv.mod_revision)  # the first event naming it: the text existed then
        found.update(await self.read(wanted))
        return found
