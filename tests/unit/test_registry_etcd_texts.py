"""Unit texts in the etcd registry without an etcd: the operations that keep texts and their references, the
garbage-collection compares evaluated as etcd evaluates them, reads in batches, the cache by hash.

The same on a real etcd, races included: tests/integration/test_registry_etcd_texts.py.
"""

from __future__ import annotations

import pytest

from fleetlet.registry.etcd_gateway import Gateway, Json, KeyValue, b64, unb64
from fleetlet.registry.etcd_keyspace import Keyspace
from fleetlet.registry.etcd_layout import Layout, ref_key, text_key
from fleetlet.registry.etcd_texts import MAX_TXN_OPS, Texts
from fleetlet.registry.model import text_hash


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class TextsGateway(Gateway):
    """Answers txns of ranges from ``stored`` (registry names → values), and records every call."""

    def __init__(self, layout: Layout, stored: dict[str, bytes]) -> None:
        super().__init__(["http://etcd.invalid"])
        self.layout = layout
        self.stored = stored
        self.calls: list[Json] = []

    async def post(self, path: str, body: Json) -> Json:
        assert path == "/v3/kv/txn"
        self.calls.append(body)
        responses: list[Json] = []
        for op in body["success"]:
            key = unb64(op["request_range"]["key"])
            name = self.layout.name(key) or ""
            kvs = (
                [{"key": b64(key), "value": b64(self.stored[name]), "mod_revision": "2"}] if name in self.stored else []
            )
            responses.append({"response_range": {"kvs": kvs}})
        return {"succeeded": True, "responses": responses}


def texts_on(stored: dict[str, bytes], *, capacity: int = 1024) -> tuple[Texts, TextsGateway]:
    layout = Layout("/f/")
    gateway = TextsGateway(layout, stored)
    return Texts(Keyspace(gateway, layout), capacity=capacity), gateway


def holds(compare: Json, keys: set[bytes]) -> bool:
    """A ``range_empty`` compare evaluated as etcd does: over every key in [key, range_end), and against an absent
    key (create revision 0) when the range is empty."""
    assert (compare["target"], compare["result"], compare["create_revision"]) == ("CREATE", "EQUAL", "0")
    start, end = unb64(compare["key"]), unb64(compare["range_end"])
    # Every existing key's create revision is above 0, so the compare holds only when no key is in the range.
    return not any(start <= k < end for k in keys)


def names(ops: list[Json], kind: str) -> list[str]:
    layout = Layout("/f/")
    return [layout.name(unb64(op[kind]["key"])) or "" for op in ops if kind in op]


def test_a_new_text_is_put_with_the_reference_and_a_stored_one_only_checked() -> None:
    texts, _ = texts_on({})
    compare, ops = texts.reference("a.service", "h1", "[Unit]\n", stored=False)
    assert compare == []
    assert names(ops, "request_put") == [text_key("h1"), ref_key("h1", "a.service")]
    compare, ops = texts.reference("a.service", "h1", "[Unit]\n", stored=True)
    assert [(c["target"], c["result"], c["version"]) for c in compare] == [("VERSION", "GREATER", "0")]
    assert names(ops, "request_put") == [ref_key("h1", "a.service")]  # the text is not sent again


@pytest.mark.parametrize(
    ("others", "collected"),
    [
        ([], True),
        (["web.service"], False),  # a name sorting before the unit's
        (["z.service"], False),  # and after
        (["web@1.service2"], False),  # the unit's name as a prefix of another
        (["web@1.servic"], False),  # another's name as a prefix of the unit's
    ],
)
def test_a_text_is_deleted_exactly_when_the_released_reference_is_its_last(others: list[str], collected: bool) -> None:
    texts, _ = texts_on({})
    layout = Layout("/f/")
    unit = "web@1.service"
    refs = {layout.key(ref_key("h1", name)) for name in [unit, *others]}
    refs.add(layout.key(ref_key("h10", "x.service")))  # another text, whose hash the first's is a prefix of
    refs.add(layout.key(text_key("h1")))
    drop, nested = texts.release(unit, "h1")
    assert names([drop], "request_delete_range") == [ref_key("h1", unit)]
    txn = nested["request_txn"]
    assert names(txn["success"], "request_delete_range") == [text_key("h1")]
    # etcd evaluates the compares before the txn's own deletion of the reference: the unit's reference is there.
    assert all(holds(c, refs) for c in txn["compare"]) == collected


def test_the_cache_keeps_the_most_recently_used_texts() -> None:
    texts, _ = texts_on({}, capacity=2)
    texts.remember("a", "A")
    texts.remember("b", "B")
    assert texts.cached("a") == "A"  # now the most recent
    texts.remember("c", "C")
    assert (texts.cached("a"), texts.cached("b"), texts.cached("c")) == ("A", None, "C")
    with pytest.raises(ValueError, match="at least one"):
        texts_on({}, capacity=0)


@pytest.mark.anyio
async def test_reads_ask_only_for_uncached_texts_as_of_their_revisions_in_batches_etcd_accepts() -> None:
    all_texts = [f"[Service]\nExecStart=/bin/sleep {i}\n" for i in range(MAX_TXN_OPS + 2)]
    texts, gateway = texts_on({text_key(text_hash(t)): t.encode() for t in all_texts})
    texts.remember(text_hash(all_texts[0]), all_texts[0])
    wanted = {text_hash(t): 7 for t in all_texts}
    assert await texts.read(wanted) == {text_hash(t): t for t in all_texts}
    assert [len(call["success"]) for call in gateway.calls] == [MAX_TXN_OPS, 1]
    assert {op["request_range"]["revision"] for call in gateway.calls for op in call["success"]} == {"7"}
    gateway.calls.clear()
    assert len(await texts.read(wanted)) == len(all_texts)
    assert gateway.calls == []  # all cached now


def event(layout: Layout, name: str, value: bytes, mod: int, deleted: bool = False) -> tuple[KeyValue, bool]:
    return KeyValue(layout.key(name), value, mod, mod, 0), deleted


@pytest.mark.anyio
async def test_watch_events_take_texts_from_their_own_write_and_read_only_the_others() -> None:
    layout = Layout("/f/")
    new, old = "[Unit]\nDescription=new\n", "[Unit]\nDescription=old\n"
    texts, gateway = texts_on({text_key(text_hash(old)): old.encode()})
    found = await texts.for_events(
        [
            event(layout, text_key(text_hash(new)), new.encode(), 5),  # written with a.service
            event(layout, "units/a.service", Layout.unit_value(text_hash(new), "inactive"), 5),
            event(layout, "units/b.service", Layout.unit_value(text_hash(old), "inactive"), 6),  # stored earlier
            event(layout, "units/c.service", Layout.unit_value(text_hash(old), "loaded"), 8),
            event(layout, "units/d.service", b"", 9, deleted=True),
        ]
    )
    assert found == {text_hash(new): new, text_hash(old): old}
    (call,) = gateway.calls  # one read, for the text not in the events, as of the first event naming it
    assert [(names([op], "request_range"), op["request_range"]["revision"]) for op in call["success"]] == [
        ([text_key(text_hash(old))], "6")
    ]
