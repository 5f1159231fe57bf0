"""Unit texts in the etcd registry, on a real etcd: stored once by hash, collected with their last reference.

What etcd holds is read directly through its gateway (not through the registry under test), and every test ends
by checking the invariant of :mod:`fleetlet.registry.etcd_texts`: each unit's text and reference exist, each
reference is a unit's, each text is referenced.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from fleetlet.registry import Change, unit_key
from fleetlet.registry.etcd import EtcdRegistry
from fleetlet.registry.etcd_gateway import b64, key_value, prefix_end
from fleetlet.registry.etcd_layout import DEFAULT_PREFIX
from fleetlet.units.model import UnitFile
from tests.integration.etcd_rig import EtcdMember
from tests.registry_contract import receive, unit

pytestmark = pytest.mark.integration


async def stored(member: EtcdMember) -> dict[str, bytes]:
    """Every key of the registry in etcd (names under the prefix) and its value."""
    prefix = DEFAULT_PREFIX.encode()
    body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
    async with aiohttp.ClientSession() as session, session.post(f"{member.url}/v3/kv/range", json=body) as response:
        answer = await response.json()
    found = (key_value(kv) for kv in answer.get("kvs", ()))
    return {kv.key[len(prefix) :].decode(): kv.value for kv in found}


def under(keys: dict[str, bytes], prefix: str) -> set[str]:
    return {k[len(prefix) :] for k in keys if k.startswith(prefix)}


async def texts_of(member: EtcdMember) -> set[str]:
    """The hashes of the texts etcd holds, after checking that texts, references and units agree."""
    keys = await stored(member)
    units = {name: orjson.loads(keys[f"units/{name}"]) for name in under(keys, "units/")}
    assert all("text" not in value for value in units.values())  # held once, under its hash
    refs = {tuple(ref.split("/", 1)) for ref in under(keys, "textrefs/")}
    assert refs == {(value["hash"], name) for name, value in units.items()}
    texts = under(keys, "texts/")
    assert texts == {hash_ for hash_, _ in refs}  # every reference's text is there, and only those
    return texts


@pytest.mark.anyio
async def test_units_with_one_text_share_its_key_and_the_last_destroy_collects_it(member: EtcdMember) -> None:
    file = unit()
    async with EtcdRegistry(member.url) as registry:
        await registry.put_unit("web@1.service", file)
        await registry.put_unit("web@2.service", file, desired_state="launched")
        assert await texts_of(member) == {file.hash}
        await registry.delete_unit("web@1.service")
        assert await texts_of(member) == {file.hash}  # still referenced by web@2
        record = await registry.get_unit("web@2.service")
        assert record is not None
        assert (record.text, record.hash) == (file.serialize(), file.hash)
        await registry.delete_unit("web@2.service")
        assert await texts_of(member) == set()
        assert await stored(member) == {}  # nothing left behind: no text, no reference


@pytest.mark.anyio
async def test_replacing_a_text_collects_the_old_one_once_nothing_references_it(member: EtcdMember) -> None:
    old, new = unit(), unit("true")
    async with EtcdRegistry(member.url) as registry:
        await registry.put_unit("a.service", old)
        await registry.put_unit("b.service", old)
        await registry.put_unit("a.service", new)
        assert await texts_of(member) == {old.hash, new.hash}  # b still names the old text
        await registry.set_desired_state("b.service", "launched")  # the same text: its reference stays
        await registry.put_unit("b.service", old, desired_state="loaded")  # a resubmit of the same text
        assert await texts_of(member) == {old.hash, new.hash}
        before = await registry.get_unit("b.service")
        assert before is not None
        revision = await registry.put_unit("b.service", new, expect_revision=before.revision)
        assert await texts_of(member) == {new.hash}
        assert revision == before.revision + 1  # the collection was part of the one write
        page = await registry.list_units()
        assert [(r.name, r.text) for r in page.units] == [
            ("a.service", new.serialize()),
            ("b.service", new.serialize()),
        ]


@pytest.mark.anyio
async def test_a_text_deleted_between_a_writers_read_and_its_txn_is_written_again(member: EtcdMember) -> None:
    """The race a stored text must survive, forced: the writer reads that the text is there, another registry
    deletes its last unit (and so the text), then the writer's txn runs. Its compare on the text fails; it reads
    again and writes the text with its unit."""
    file = unit()
    async with EtcdRegistry(member.url) as writer, EtcdRegistry(member.url) as other:
        await other.put_unit("old.service", file)
        read = writer._keys.read  # the registry's read of the unit and the text, before its txn
        raced = False

        async def read_then_race(*names: str) -> list[Any]:
            nonlocal raced
            found = await read(*names)
            if not raced:
                raced = True
                assert found[1] is not None  # the text was there when read
                await other.delete_unit("old.service")
            return found

        writer._keys.read = read_then_race  # type: ignore[method-assign]
        await writer.put_unit("new.service", file)
        assert raced
        assert await texts_of(member) == {file.hash}
        record = await other.get_unit("new.service")
        assert record is not None
        assert record.text == file.serialize()


async def both(first: Callable[[], Coroutine[Any, Any, int]], second: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Two writes at once."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)


@pytest.mark.anyio
async def test_concurrent_writers_of_one_text_neither_lose_nor_leak_it(member: EtcdMember) -> None:
    """Two registry objects (two agents) submit and destroy units with the same texts at once, in every mix."""
    async with EtcdRegistry(member.url) as one, EtcdRegistry(member.url) as two:
        for round_ in range(5):
            file = unit(f"sleep {round_}")
            await one.put_unit("seed.service", file)
            # A new unit of the text while its only other unit goes: the text must stay.
            await both(partial(one.delete_unit, "seed.service"), partial(two.put_unit, "x.service", file))
            assert await texts_of(member) == {file.hash}
            # Both submit the text under new names at once, then both units of it go at once: nothing may stay.
            await both(partial(one.put_unit, "y.service", file), partial(two.put_unit, "z.service", file))
            assert await texts_of(member) == {file.hash}
            await one.delete_unit("x.service")
            await both(partial(one.delete_unit, "y.service"), partial(two.delete_unit, "z.service"))
            assert await texts_of(member) == set()

        async def submit(registry: EtcdRegistry, name: str) -> None:
            await registry.put_unit(name, unit())

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(submit, (one, two)[i % 2], f"u{i}.service")
        assert await texts_of(member) == {unit().hash}
        assert len(under(await stored(member), "textrefs/")) == 20


def unit_changes(changes: list[Change]) -> list[tuple[str, str, str | None]]:
    """(kind, unit key, text) of each change."""
    return [(c.kind, c.key, getattr(c.value, "text", None)) for c in changes]


@pytest.mark.anyio
@pytest.mark.parametrize("prefix", ["", "units/"])
async def test_watch_events_carry_the_text_including_a_text_stored_earlier(member: EtcdMember, prefix: str) -> None:
    """A fresh registry (nothing cached) watches from 0: the texts written with their units come in the same
    etcd message (prefix ""), or are read (units/ only: texts/ keys are not streamed); a text already gone by the
    time the watch reads it (c's) is read as of the event's revision."""
    one, two = unit(), unit("true")
    async with EtcdRegistry(member.url) as writer:
        await writer.put_unit("c.service", two)
        await writer.delete_unit("c.service")  # its text is collected
        await writer.put_unit("a.service", one)
        async with EtcdRegistry(member.url) as watcher:
            send, changes = anyio.create_memory_object_stream[Change](100)
            async with anyio.create_task_group() as tg, changes:
                tg.start_soon(lambda: watcher.watch(0, send, prefix=prefix))
                replayed = await receive(changes, 3)
                await writer.put_unit("b.service", one)  # a text stored earlier: no text key in this write
                await writer.put_unit("a.service", one, desired_state="launched")  # a resubmit
                await writer.put_unit("a.service", two)
                live = await receive(changes, 3)
                tg.cancel_scope.cancel()
    assert unit_changes(replayed) == [
        ("put", unit_key("c.service"), two.serialize()),
        ("delete", unit_key("c.service"), None),
        ("put", unit_key("a.service"), one.serialize()),
    ]
    assert unit_changes(live) == [
        ("put", unit_key("b.service"), one.serialize()),
        ("put", unit_key("a.service"), one.serialize()),
        ("put", unit_key("a.service"), two.serialize()),
    ]


@pytest.mark.anyio
async def test_a_page_reads_its_texts_in_one_call_and_then_from_the_cache(
    member: EtcdMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    files: list[UnitFile] = [unit(f"sleep {i}") for i in range(5)]
    async with EtcdRegistry(member.url) as writer, EtcdRegistry(member.url) as reader:
        for i, file in enumerate(files):
            await writer.put_unit(f"u{i}.service", file)
        calls: list[str] = []
        post = reader._gateway.post

        async def counted(path: str, body: dict[str, Any]) -> dict[str, Any]:
            calls.append(path)
            return await post(path, body)

        monkeypatch.setattr(reader._gateway, "post", counted)
        page = await reader.list_units()
        assert [r.text for r in page.units] == [f.serialize() for f in files]
        assert calls == ["/v3/kv/range", "/v3/kv/txn"]  # the page, then its five texts in one txn
        calls.clear()
        await reader.list_units()
        record = await reader.get_unit("u3.service")
        assert record is not None
        assert record.text == files[3].serialize()
        assert calls == ["/v3/kv/range", "/v3/kv/range"]  # texts known by hash: only the units are read
