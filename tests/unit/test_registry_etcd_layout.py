"""The etcd registry's layout and wire helpers, without an etcd: keys, ranges, revisions, watch events as changes.

The registry contract runs on a real etcd in tests/integration/test_registry_etcd.py.
"""

from __future__ import annotations

import orjson
import pytest

from fleetlet.registry import LeaderRecord, RegistryError, ScheduleEntry, UnitRecord
from fleetlet.registry.codec import RegistryProtocolError
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.etcd_gateway import CompactedError, KeyValue, _decode, b64, key_value, number, prefix_end, unb64
from fleetlet.registry.etcd_layout import Layout, from_etcd, ref_key, refs_prefix, text_key, to_etcd
from fleetlet.registry.model import text_hash


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/fleetlet/", b"/fleetlet0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", b"\0"), (b"", b"\0")],
)
def test_prefix_end_covers_exactly_the_keys_under_a_prefix(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_base64_and_numbers_as_the_gateway_writes_them() -> None:
    assert unb64(b64("units/é.service")) == "units/é.service".encode()
    assert number({"revision": "12"}, "revision") == 12
    assert number({}, "revision") == 0  # zero values are left out of answers
    with pytest.raises(RegistryError, match="not an integer"):
        number({"revision": "x"}, "revision")


def test_an_empty_etcd_is_at_revision_1_and_fleetlet_counts_from_0() -> None:
    assert (from_etcd(1), from_etcd(2), to_etcd(1), to_etcd(0)) == (0, 1, 2, 1)


def kv(key: bytes, value: bytes = b"", mod: int = 2, lease: int = 0) -> KeyValue:
    return KeyValue(key, value, mod, mod, lease)


def test_watch_events_become_changes_and_internal_keys_none() -> None:
    layout = Layout("/f/")
    unit = kv(b"/f/units/a.service", Layout.unit_value("abc", "launched"), mod=5)
    put = layout.change(unit, False, {"abc": "[Unit]\n"})
    assert put is not None
    assert (put.revision, put.kind, put.key, put.value) == (
        4,
        "put",
        "units/a.service",
        UnitRecord("a.service", "[Unit]\n", "abc", "launched", 4),
    )
    entry = layout.change(kv(b"/f/schedule/m1/a.service", Layout.entry_value("a.service", "m1"), mod=7), False, {})
    assert entry is not None
    assert entry.value == ScheduleEntry("a.service", "m1", 6)
    gone = layout.change(kv(b"/f/schedule/m1/a.service", mod=8), True, {})
    assert gone is not None
    assert (gone.kind, gone.value, gone.revision) == ("delete", None, 7)
    leader = layout.change(kv(b"/f/leader", Layout.leader_value("m1", 100.5, 77, 2), mod=3, lease=77), False, {})
    assert leader is not None
    assert leader.value == LeaderRecord("m1", 2, 100.5)
    for internal in (b"/f/placement/a.service", b"/f/texts/abc", b"/f/textrefs/abc/a.service"):
        assert layout.change(kv(internal, b"m1"), False, {}) is None
        assert layout.change(kv(internal), True, {}) is None
    assert layout.change(kv(b"/other/units/a.service"), True, {}) is None
    with pytest.raises(RegistryProtocolError, match="not read"):  # a unit's put never goes out without its text
        layout.change(unit, False, {})


def test_a_unit_record_names_its_text_by_hash_and_the_text_is_stored_once_under_it() -> None:
    text = "[Service]\nExecStart=/bin/true\n"
    hash_ = text_hash(text)
    assert orjson.loads(Layout.unit_value(hash_, "loaded")) == {"hash": hash_, "desiredState": "loaded"}
    record = kv(b"/f/units/a@1.service", Layout.unit_value(hash_, "loaded"), mod=3)
    assert Layout.unit_hash(record) == hash_
    assert Layout.unit("a@1.service", record, text) == UnitRecord("a@1.service", text, hash_, "loaded", 2)
    assert (text_key(hash_), refs_prefix(hash_), ref_key(hash_, "a@1.service")) == (
        f"texts/{hash_}",
        f"textrefs/{hash_}/",
        f"textrefs/{hash_}/a@1.service",
    )
    assert Layout.text(kv(b"/f/texts/x", text.encode()), hash_) == text


def test_a_text_that_does_not_match_its_hash_is_refused() -> None:
    with pytest.raises(RegistryProtocolError, match="does not hold the text"):
        Layout.text(kv(b"/f/texts/abc", b"[Unit]\n"), "abc")
    with pytest.raises(RegistryProtocolError, match="UTF-8"):
        Layout.text(kv(b"/f/texts/abc", b"\xff"), "abc")


def test_a_leader_value_keeps_its_lease() -> None:
    value = Layout.leader(kv(b"/f/leader", Layout.leader_value("m1", 10.0, 2**62, 5), mod=9))
    assert (value.record, value.lease, value.ttl) == (LeaderRecord("m1", 8, 10.0), 2**62, 5)


def test_a_value_that_is_not_fleetlets_is_a_clear_error() -> None:
    with pytest.raises(RegistryProtocolError, match="does not hold JSON"):
        Layout.unit_hash(kv(b"/f/units/a.service", b"not json"))
    with pytest.raises(RegistryProtocolError, match="hash"):
        Layout.unit_hash(kv(b"/f/units/a.service", b'{"desiredState": "loaded"}'))
    with pytest.raises(RegistryProtocolError, match="desiredState"):
        Layout.unit("a.service", kv(b"/f/units/a.service", b'{"hash": "", "desiredState": "x"}'), "")


def test_key_values_as_the_gateway_sends_them() -> None:
    fields = {"key": b64("k"), "create_revision": "3", "mod_revision": "4", "version": "2", "value": b64("v")}
    assert key_value(fields) == KeyValue(b"k", b"v", 3, 4, 0)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"error": "etcdserver: mvcc: required revision has been compacted", "code": 11}', 400, CompactedError),
        (b'{"error": "etcdserver: request timed out", "code": 14}', 503, RegistryUnavailable),
        (b'{"error": "etcdserver: duplicate key given in txn request", "code": 3}', 400, RegistryError),
        (b"<html>", 502, RegistryUnavailable),
        (b"<html>", 500, RegistryError),
    ],
)
def test_gateway_errors_map_to_the_registrys(body: bytes, status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        _decode(body, status, "http://127.0.0.1:2379")
