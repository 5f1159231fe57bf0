"""How the etcd registry lays fleetlet's records out in etcd: keys under a prefix, values, revisions.

Under the prefix (default ``/fleetlet/``), the keys of :mod:`fleetlet.registry.model` plus internal ones::

    units/<name>                  {"hash", "desiredState"}           the unit as submitted; its text is texts/<hash>
    texts/<hash>                  <the text, UTF-8>                  a unit text, stored once however many units
                                                                     (template instances, resubmits) share it
    textrefs/<hash>/<unit>        (empty)                            the reference index: one key per unit whose
                                                                     text it is, written and deleted in the same
                                                                     txn as the unit; a text goes in the txn that
                                                                     deletes its last reference (see etcd_texts)
    schedule/<machine>/<unit>     {"unit", "machineId"}              the leader's decision; one prefix per machine
    placement/<unit>              <machine id>                       where the unit is placed: an index, so that
                                                                     moving or deleting a unit finds its entry in
                                                                     one read; written in the same txn as the entry
    leader                        {"machineId", "expiresAt", "lease", "ttl"}   attached to the etcd lease
    members/<machine>             {"address"}                        an agent's API address, on a lease it keeps
                                                                     alive: how agents on etcd find each other's
                                                                     gossip (see etcd_directory)

A record's revision is its key's mod revision, so values never hold one (a write cannot know its own revision
before etcd assigns it). ``texts/``, ``textrefs/``, ``placement/`` and ``members/`` keys are internal: watches do
not report them, and a unit's change carries its text as every read of a unit does. ``<hash>`` is the SHA1 of the text
(:func:`~fleetlet.registry.model.text_hash`), so a text's key names its content and never changes value.

Revisions: etcd starts a new cluster at revision 1, and its first write makes 2. fleetlet's revision is etcd's
minus one, so an empty registry is at 0 and its first write is 1, as on every backend. The count is dense only on
an etcd of fleetlet's own; on a shared etcd, other programs' writes take revisions too, which keeps fleetlet's
strictly increasing, just not consecutive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fleetlet.registry.codec import (
    RegistryProtocolError,
    decode_entry,
    decode_leader,
    decode_unit,
    json_int,
    json_str,
)
from fleetlet.registry.etcd_gateway import KeyValue, prefix_end
from fleetlet.registry.model import (
    LEADER_KEY,
    SCHEDULE_PREFIX,
    UNITS_PREFIX,
    Change,
    LeaderRecord,
    ScheduleEntry,
    UnitRecord,
    Value,
    text_hash,
)

DEFAULT_PREFIX = "/fleetlet/"
PLACEMENT_PREFIX = "placement/"
TEXTS_PREFIX = "texts/"
TEXTREFS_PREFIX = "textrefs/"


def text_key(hash_: str) -> str:
    return f"{TEXTS_PREFIX}{hash_}"


def refs_prefix(hash_: str) -> str:
    """The prefix of a text's references: one key per unit whose text it is."""
    return f"{TEXTREFS_PREFIX}{hash_}/"


def ref_key(hash_: str, unit: str) -> str:
    return f"{refs_prefix(hash_)}{unit}"


def to_etcd(revision: int) -> int:
    return revision + 1


def from_etcd(revision: int) -> int:
    return max(0, revision - 1)


@dataclass(frozen=True, slots=True)
class LeaderValue:
    """The leader key's value: the record, and the etcd lease that keeps the key alive (``ttl``: as granted)."""

    record: LeaderRecord
    lease: int
    ttl: int


class Layout:
    """fleetlet's keys under ``prefix`` in etcd, and its records as etcd values."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._raw = prefix.encode("utf-8")

    def key(self, name: str) -> bytes:
        """The etcd key of a registry key (``units/a.service``)."""
        return self._raw + name.encode("utf-8")

    def range_end(self, name_prefix: str) -> bytes:
        return prefix_end(self.key(name_prefix))

    def name(self, key: bytes) -> str | None:
        """The registry key of an etcd key; None for a key outside the prefix."""
        if not key.startswith(self._raw):
            return None
        return key[len(self._raw) :].decode("utf-8", errors="replace")

    # --- values --------------------------------------------------------------------------------------------------

    @staticmethod
    def unit_value(hash_: str, desired_state: str) -> bytes:
        return orjson.dumps({"hash": hash_, "desiredState": desired_state})

    @staticmethod
    def entry_value(unit: str, machine_id: str) -> bytes:
        return orjson.dumps({"unit": unit, "machineId": machine_id})

    @staticmethod
    def leader_value(machine_id: str, expires_at: float, lease: int, ttl: int) -> bytes:
        return orjson.dumps({"machineId": machine_id, "expiresAt": expires_at, "lease": str(lease), "ttl": ttl})

    @staticmethod
    def unit_hash(kv: KeyValue) -> str:
        """The hash of the text a unit's record names: the key of that text."""
        return json_str(_object(kv), "hash")

    @staticmethod
    def unit(name: str, kv: KeyValue, text: str) -> UnitRecord:
        """A unit's record, with its text (read from ``texts/<hash>``, or known by hash already)."""
        return decode_unit({**_object(kv), "text": text, "name": name, "revision": from_etcd(kv.mod_revision)})

    @staticmethod
    def text(kv: KeyValue, hash_: str) -> str:
        """A text key's value, checked against the hash that named it: a text is trusted by its hash everywhere
        (the caches keep it by hash), so one that does not match is refused here rather than served."""
        try:
            text = kv.value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RegistryProtocolError(f"{kv.key!r} in etcd is not UTF-8") from exc
        if text_hash(text) != hash_:
            raise RegistryProtocolError(f"{kv.key!r} in etcd does not hold the text of hash {hash_}")
        return text

    @staticmethod
    def entry(kv: KeyValue) -> ScheduleEntry:
        return decode_entry({**_object(kv), "revision": from_etcd(kv.mod_revision)})

    @staticmethod
    def leader(kv: KeyValue) -> LeaderValue:
        """The leader key's value. Its revision, which names the term, is the key's mod revision: only a campaign
        writes the key (renewals keep the lease alive and write nothing)."""
        fields = _object(kv)
        record = decode_leader({**fields, "revision": from_etcd(kv.mod_revision)})
        try:
            lease = int(fields.get("lease", ""))
        except ValueError as exc:
            raise RegistryProtocolError(f"leader record: lease {fields.get('lease')!r} is not an integer") from exc
        return LeaderValue(record, lease, json_int(fields, "ttl"))

    def change(self, kv: KeyValue, deleted: bool, texts: Mapping[str, str]) -> Change | None:
        """A watch event as a registry change; None for internal keys (``texts/``, ``textrefs/``, ``placement/``)
        and keys not fleetlet's. ``texts`` holds, by hash, the text of every unit the event may put."""
        name = self.name(kv.key)
        if name is None or not (name.startswith((UNITS_PREFIX, SCHEDULE_PREFIX)) or name == LEADER_KEY):
            return None
        revision = from_etcd(kv.mod_revision)
        if deleted:
            return Change(revision, "delete", name, None)
        value: Value
        if name.startswith(UNITS_PREFIX):
            hash_ = self.unit_hash(kv)
            if hash_ not in texts:
                raise RegistryProtocolError(f"{name} names text {hash_}, which was not read")
            value = self.unit(name[len(UNITS_PREFIX) :], kv, texts[hash_])
        elif name.startswith(SCHEDULE_PREFIX):
            value = self.entry(kv)
        else:
            value = self.leader(kv).record
        return Change(revision, "put", name, value)


def _object(kv: KeyValue) -> dict[str, Any]:
    try:
        data = orjson.loads(kv.value)
    except orjson.JSONDecodeError as exc:
        raise RegistryProtocolError(f"{kv.key!r} in etcd does not hold JSON: {kv.value[:80]!r}") from exc
    if not isinstance(data, dict):
        raise RegistryProtocolError(f"{kv.key!r} in etcd does not hold a JSON object")
    return data
