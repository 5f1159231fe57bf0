"""The Scuttlebutt store: digests, deltas, generations, forgetting; and the failure detector's arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.cluster.detector import DetectorSettings, PhiAccrual
from fleetlet.cluster.state import ClusterState, Delta, Entry, Reset, Update


def test_local_writes_take_increasing_versions_and_skip_unchanged_values() -> None:
    a = ClusterState("a", generation=7)
    assert a.set_local("x", 1)
    assert a.set_local("y", 2)
    assert not a.set_local("x", 1)
    assert not a.set_local("never", None)
    assert a.set_local("x", None)  # a tombstone is a write
    assert a.digest() == {"a": (7, 3, 0)}
    assert a.local.entries["x"] == Entry(None, 3)


def test_an_exchange_sends_only_what_the_other_side_lacks() -> None:
    a, b = ClusterState("a", 1), ClusterState("b", 2)
    a.set_local("x", 1)
    a.set_local("y", 2)
    resets, updates = b.apply(a.deltas_for(b.digest()))
    assert resets == [Reset("a", 1, None)]
    assert updates == [Update("a", "x", 1, None), Update("a", "y", 2, None)]
    a.set_local("y", 3)
    deltas = a.deltas_for(b.digest())
    assert deltas == [Delta("a", 1, (("y", Entry(3, 3)),))]  # not x again
    assert b.apply(deltas) == ([], [Update("a", "y", 3, 2)])
    assert a.deltas_for(b.digest()) == []  # in step
    assert b.apply(deltas) == ([], [])  # the same delta twice changes nothing


def test_a_member_never_takes_its_own_state_from_a_peer_but_notices_another_agent_using_its_id() -> None:
    a = ClusterState("a", 5)
    a.set_local("x", 1)
    stale = [Delta("a", 5, (("x", Entry(0, 99)),))]
    assert a.apply(stale) == ([], [])
    assert a.claims_local(stale) is None  # its own generation: its own state, come back
    impostor = [Delta("a", 9, (("x", Entry(0, 1)),))]
    assert a.claims_local(impostor) == 9
    assert a.apply(impostor) == ([], [])
    assert a.local.get("x") == 1


def test_a_newer_generation_replaces_everything_an_older_one_is_ignored() -> None:
    b = ClusterState("b", 1)
    b.apply([Delta("a", 10, (("x", Entry(1, 1)), ("y", Entry(2, 2))))])
    assert b.apply([Delta("a", 9, (("z", Entry(3, 5)),))]) == ([], [])
    resets, updates = b.apply([Delta("a", 11, (("x", Entry(5, 1)),))])
    assert resets == [Reset("a", 11, 10)]
    assert updates == [Update("a", "x", 5, None)]
    member = b.get("a")
    assert member is not None
    assert member.get("y") is None
    # A peer still on the old generation is sent the new one in full.
    assert b.deltas_for({"a": (10, 2, 0)}) == [Delta("a", 11, (("x", Entry(5, 1)),))]
    # One already newer is sent nothing of it.
    assert [d for d in b.deltas_for({"a": (12, 0, 0)}) if d.member == "a"] == []


def test_a_forgotten_member_stays_forgotten_until_a_newer_generation() -> None:
    b = ClusterState("b", 1)
    b.apply([Delta("a", 10, (("x", Entry(1, 1)),))])
    b.forget("a")
    b.forget("b")  # never itself
    assert "a" not in b.digest()
    assert "b" in b.digest()
    assert b.apply([Delta("a", 10, (("x", Entry(1, 1)),))]) == ([], [])
    resets, _ = b.apply([Delta("a", 11, (("x", Entry(1, 1)),))])
    assert resets == [Reset("a", 11, None)]


def test_a_bounded_message_goes_to_the_most_behind_member_first_in_version_order() -> None:
    source = ClusterState("s", 1)
    source.apply([Delta("m", 1, tuple((f"k{i}", Entry(i, i + 1)) for i in range(10)))])
    for i in range(3):
        source.set_local(f"own{i}", i)
    deltas = source.deltas_for({}, max_entries=4)
    assert [d.member for d in deltas] == ["m"]
    assert [entry.version for _, entry in deltas[0].entries] == [1, 2, 3, 4]
    sink = ClusterState("t", 1)
    sink.apply(deltas)
    assert sink.digest()["m"] == (1, 4, 0)  # a prefix of versions: the digest stays truthful


def test_heartbeats_travel_in_digests_not_as_entries() -> None:
    a, b = ClusterState("a", 1), ClusterState("b", 1)
    a.set_local("machine", "a")
    b.apply(a.deltas_for(b.digest()))
    a.beat()
    a.beat()
    assert a.deltas_for(b.digest()) == []  # nothing to send but the digest
    assert b.take_heartbeats(a.digest()) == ["a"]
    assert b.take_heartbeats(a.digest()) == []  # not newer
    assert b.digest()["a"] == (1, 1, 2)
    # Another generation's heartbeat waits for that generation's state; a node never takes its own from a peer.
    assert b.take_heartbeats({"a": (2, 1, 9), "b": (1, 0, 9)}) == []
    assert b.local.heartbeat == 0


values = st.one_of(st.none(), st.integers(0, 3))
writes = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", "z"]), values), max_size=30)


def truth(state: ClusterState) -> dict[str, tuple[int, int, int]]:
    """The digest as it follows from the members' states."""
    return {member: (s.generation, s.max_version, s.heartbeat) for member, s in state.members().items()}


@given(writes, st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=40), st.integers(1, 5))
def test_any_exchanges_converge_to_every_owners_state(
    ops: list[tuple[str, str, int | None]], pairs: list[tuple[int, int]], budget: int
) -> None:
    """Whatever order writes and bounded exchanges happen in, a final round of full exchanges leaves every node
    with exactly each owner's entries."""
    nodes = {name: ClusterState(name, 1) for name in "abc"}
    order = list(nodes.values())
    for node in order:
        node.set_local("machine", node.local_id)  # every member writes its record first: how the others learn of it
    for i, (owner, key, value) in enumerate(ops):
        nodes[owner].set_local(key, value)
        left, right = pairs[i % len(pairs)] if pairs else (0, 1)
        a, b = order[left], order[right]
        if a is not b:
            b.apply(a.deltas_for(b.digest(), max_entries=budget))
            b.take_heartbeats(a.digest())
            a.beat()
        for node in order:
            assert node.digest() == truth(node)  # kept up to date, write by write
    for _ in range(2):
        for a in order:
            for b in order:
                if a is not b:
                    b.apply(a.deltas_for(b.digest()))
    for node in order:
        for writer in order:
            mine = node.get(writer.local_id)
            assert mine is not None
            assert mine.entries == writer.local.entries
            assert mine.max_version == writer.local.max_version


# --- the detector ----------------------------------------------------------------------------------------------


SETTINGS = DetectorSettings(first_interval=0.2, min_std=0.1, acceptable_pause=0.3)


def test_phi_grows_with_silence_and_a_heartbeat_resets_it() -> None:
    detector = PhiAccrual(SETTINGS, now=0.0)
    assert detector.phi(0.2) < 0.01
    assert detector.phi(0.5) < 1
    assert 5 < detector.phi(1.0) < 10
    assert detector.phi(2.0) > 100
    detector.heartbeat(2.0)
    assert detector.phi(2.1) < 1
    assert detector.last_heartbeat == 2.0


def test_phi_follows_a_member_whose_heartbeats_come_slowly() -> None:
    steady = PhiAccrual(SETTINGS, now=0.0)
    slow = PhiAccrual(SETTINGS, now=0.0)
    for i in range(1, 50):
        steady.heartbeat(i * 0.2)
        slow.heartbeat(i * 1.0)
    # One second of silence after each one's last heartbeat: alarming for the steady member, not for the slow.
    assert steady.phi(49 * 0.2 + 1.0) > 5
    assert slow.phi(49 * 1.0 + 1.0) < 1


def test_phi_never_overflows() -> None:
    detector = PhiAccrual(SETTINGS, now=0.0)
    assert detector.phi(1e9) == 1000.0
    assert detector.phi(-1e9) == 0.0


def test_detector_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        DetectorSettings(first_interval=0, min_std=0.1, acceptable_pause=0)


@pytest.mark.parametrize("threshold", [0.1, 0.3, math.log10(2), 0.31, 1.0, 8.0])
def test_suspicious_says_what_phi_says_without_working_phi_out_for_a_short_silence(threshold: float) -> None:
    detector = PhiAccrual(SETTINGS, now=0.0)
    for i in range(1, 20):
        detector.heartbeat(i * 0.2 + (0.05 if i % 3 else 0.0))
    last = detector.last_heartbeat
    for step in range(200):
        now = last - 0.5 + step * 0.01
        assert detector.suspicious(now, threshold) == (detector.phi(now) >= threshold), now


def test_the_digest_follows_every_write_reset_and_forgetting() -> None:
    b = ClusterState("b", 1)
    b.set_local("machine", "b")
    b.beat()
    b.apply([Delta("a", 10, (("x", Entry(1, 1)), ("y", Entry(2, 2))))])
    b.apply([Delta("c", 5, (("x", Entry(1, 3)),))])
    b.take_heartbeats({"a": (10, 2, 7), "c": (4, 3, 9)})  # c's heartbeat is of another generation: not taken
    assert b.digest() == {"b": (1, 1, 1), "a": (10, 2, 7), "c": (5, 3, 0)} == truth(b)
    b.apply([Delta("a", 11, (("x", Entry(5, 1)),))])  # a restarted: a new generation, heartbeats again from 0
    assert b.digest() == {"b": (1, 1, 1), "a": (11, 1, 0), "c": (5, 3, 0)} == truth(b)
    b.forget("a")
    b.take_heartbeats({"c": (5, 3, 4)})
    assert b.digest() == {"b": (1, 1, 1), "c": (5, 3, 4)} == truth(b)
    assert list(b.digest()) == ["b", "c"]
    b.apply([Delta("a", 12, (("x", Entry(5, 2)),))])  # back, under a newer generation still
    assert b.digest() == {"b": (1, 1, 1), "c": (5, 3, 4), "a": (12, 2, 0)} == truth(b)
