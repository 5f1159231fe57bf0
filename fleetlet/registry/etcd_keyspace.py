"""The registry's keys in etcd as reads and txns: what the etcd registry and its leader terms are written in.

Names here are registry keys (``units/a.service``); :class:`Keyspace` puts them under the layout's prefix, in
base64, as the gateway wants. Revisions here are etcd's: the callers convert (:mod:`fleetlet.registry.etcd_layout`).
"""

from __future__ import annotations

from fleetlet.registry.etcd_gateway import Gateway, Json, KeyValue, b64, header_revision, key_value
from fleetlet.registry.etcd_layout import Layout, from_etcd
from fleetlet.registry.model import LEADER_KEY


def kvs(answer: Json) -> list[KeyValue]:
    """The keys a range found."""
    return [key_value(kv) for kv in answer.get("kvs", ())]


def fleetlet_revision(kv: KeyValue | None) -> int:
    """A record's fleetlet revision; 0 when there is none, as conditional writes expect."""
    return from_etcd(kv.mod_revision) if kv is not None else 0


class Keyspace:
    """Reads, txns and txn operations on the registry's keys under ``layout``'s prefix."""

    def __init__(self, gateway: Gateway, layout: Layout) -> None:
        self.gateway = gateway
        self.layout = layout

    async def revision(self) -> int:
        """etcd's current revision (a range that reads no value)."""
        answer = await self.gateway.post("/v3/kv/range", {**self._key(LEADER_KEY), "keys_only": True})
        return header_revision(answer)

    async def get(self, name: str) -> tuple[KeyValue | None, int]:
        """One key, and the etcd revision it was read at."""
        answer = await self.gateway.post("/v3/kv/range", self._key(name))
        found = kvs(answer)
        return (found[0] if found else None), header_revision(answer)

    async def read(self, *names: str) -> list[KeyValue | None]:
        """Several keys at one revision: a txn of ranges only."""
        answer = await self.txn([], [self.get_op(name) for name in names])
        return [first_kv(answer, i) for i in range(len(names))]

    async def range_prefix(self, prefix: str, *, limit: int = 0, start: bytes | None = None) -> Json:
        """The keys under ``prefix`` (from ``start``, an etcd key, if given), sorted; at most ``limit`` (0: all)."""
        body: Json = {
            "key": b64(start if start is not None else self.layout.key(prefix)),
            "range_end": b64(self.layout.range_end(prefix)),
        }
        if limit:
            body["limit"] = str(limit)
        return await self.gateway.post("/v3/kv/range", body)

    async def put(self, name: str, value: bytes, *, lease: int = 0) -> Json:
        return await self.gateway.post("/v3/kv/put", self.put_op(name, value, lease=lease)["request_put"])

    async def txn(self, compare: list[Json], success: list[Json], failure: list[Json] | None = None) -> Json:
        """``success`` if every ``compare`` holds, else ``failure``: the answer's ``succeeded`` says which ran."""
        body: Json = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        return await self.gateway.post("/v3/kv/txn", body)

    # --- compares and operations, for txn ------------------------------------------------------------------------

    def mod_is(self, name: str, etcd_revision: int) -> Json:
        """The key was last written at ``etcd_revision`` (0: it does not exist)."""
        return {**self._key(name), "target": "MOD", "result": "EQUAL", "mod_revision": str(etcd_revision)}

    def exists(self, name: str) -> Json:
        """The key exists (its version, the count of writes since it was created, is above 0)."""
        return {**self._key(name), "target": "VERSION", "result": "GREATER", "version": "0"}

    @staticmethod
    def range_empty(start: bytes, end: bytes) -> Json:
        """No key in [``start``, ``end``) (etcd keys, not names): a compare over a range holds for every key in
        it, and on an empty range is evaluated against an absent key, whose create revision is 0. Since every
        existing key has a create revision above 0, this holds exactly when the range is empty."""
        return {"key": b64(start), "range_end": b64(end), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}

    def created_at(self, name: str, etcd_revision: int) -> Json:
        """The key is the one created at ``etcd_revision``: not deleted and created again since."""
        return {**self._key(name), "target": "CREATE", "result": "EQUAL", "create_revision": str(etcd_revision)}

    def put_op(self, name: str, value: bytes, *, lease: int = 0) -> Json:
        put: Json = {**self._key(name), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        return {"request_put": put}

    def delete_op(self, name: str) -> Json:
        return {"request_delete_range": self._key(name)}

    def get_op(self, name: str, *, etcd_revision: int = 0) -> Json:
        """A range of one key, as of ``etcd_revision`` if given (0: the txn's own revision)."""
        get: Json = self._key(name)
        if etcd_revision:
            get["revision"] = str(etcd_revision)
        return {"request_range": get}

    @staticmethod
    def txn_op(compare: list[Json], success: list[Json]) -> Json:
        """A nested txn: ``success`` runs if every ``compare`` holds, and the enclosing txn runs either way.
        etcd evaluates its compares with the enclosing txn's, against the state before any of its operations."""
        return {"request_txn": {"compare": compare, "success": success}}

    def _key(self, name: str) -> Json:
        return {"key": b64(self.layout.key(name))}


def first_kv(answer: Json, index: int) -> KeyValue | None:
    """The key a txn's ``index``-th operation, a range, found, if any."""
    responses = answer.get("responses", ())
    if index >= len(responses):
        return None
    found = kvs(responses[index].get("response_range", {}))
    return found[0] if found else None
