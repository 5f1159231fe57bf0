"""What the cluster knows of its members: versioned key/value state per member, reconciled in Scuttlebutt's way.

Every member owns one small map (its machine record, its heartbeat counter, the states of its units, whether it
is leaving) and is the only writer of it. Each write takes the next *version* of that member, so a member's state
is summed up by one number, its highest version: a *digest* is that number for every member a node knows. Two
nodes exchanging digests learn exactly which entries the other lacks (those of a higher version than its digest
says) and send only those, oldest first, so that a truncated message still leaves the receiver with a prefix of
versions and a correct digest (van Renesse et al., "Efficient Reconciliation and Flow Control for Anti-Entropy
Protocols", 2008).

A member's heartbeat is not an entry of its state but a counter beside it, carried in every digest: liveness spreads
with the digests each exchange sends anyway, instead of making every member's state change every round (which
would fill every exchange with every member's heartbeat entry: at 100 members, most of an exchange's cost).

Versions restart when an agent restarts, so a member's state also carries its *generation* (the agent's start time
in microseconds, as Cassandra does): a newer generation replaces everything known of the member, an older one is
ignored. A member removed from the view after it died is *forgotten* at its generation: peers that still hold it
would otherwise gossip it straight back.

This module does no I/O and knows no time; :mod:`fleetlet.cluster.gossiper` drives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, NamedTuple, TypeAlias

# The digest of one member: (generation, highest version, heartbeat).
Version: TypeAlias = tuple[int, int, int]

# Entries sent in one message at most: bounds a message when a node joins a large cluster; the rest follows in
# the next rounds, in version order.
DEFAULT_MAX_ENTRIES: Final = 4096


# Entries and deltas are named tuples, not dataclasses: every exchange decodes hundreds of them, and a tuple is
# several times cheaper to build.
class Entry(NamedTuple):
    """One key of a member's state; ``value`` None is a tombstone (the key was deleted)."""

    value: Any
    version: int


class Delta(NamedTuple):
    """Entries of one member's state, in increasing version, as they travel between nodes."""

    member: str
    generation: int
    entries: tuple[tuple[str, Entry], ...]


@dataclass(frozen=True, slots=True)
class Update:
    """A key of a member that changed here by applying deltas (``previous`` None: the key is new)."""

    member: str
    key: str
    value: Any
    previous: Any


@dataclass(frozen=True, slots=True)
class Reset:
    """A member seen with a new generation (it restarted): everything known of it before is gone."""

    member: str
    generation: int
    previous_generation: int | None


class Digest(Mapping[str, Version]):
    """``(generation, highest version, heartbeat)`` of every member a node knows, kept as two flat lists.

    ``members`` and ``numbers`` (three per member, in the members' order) are the wire's form of a digest
    (:mod:`fleetlet.cluster.wire`), so a digest is encoded and decoded without a loop per member; and they are two
    objects for the garbage collector to track, where a dict of triples is one per member. Every exchange holds
    two digests of every member across its awaits: at 100 members in one process, triples kept the collector
    busy for a third of the process's time. ``index`` (member -> position of its numbers) is built on first use,
    or given by a decoder that already built it to find duplicates.
    """

    __slots__ = ("_index", "members", "numbers")

    def __init__(self, members: list[str], numbers: list[int], index: dict[str, int] | None = None) -> None:
        self.members = members
        self.numbers = numbers
        self._index = index

    @classmethod
    def of(cls, versions: Mapping[str, Version]) -> Digest:
        if isinstance(versions, Digest):
            return versions
        return cls(list(versions), list(chain.from_iterable(versions.values())))

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self.members, range(0, len(self.numbers), 3), strict=True))
        return self._index

    def __getitem__(self, member: str) -> Version:
        at = self.index()[member]
        numbers = self.numbers
        return numbers[at], numbers[at + 1], numbers[at + 2]

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Digest({dict(self.items())!r})"


class MemberState:
    """One member's map: its generation, its entries, and the highest version among them."""

    __slots__ = ("entries", "generation", "heartbeat", "max_version")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.entries: dict[str, Entry] = {}
        self.max_version = 0
        self.heartbeat = 0

    def get(self, key: str) -> Any:
        entry = self.entries.get(key)
        return None if entry is None else entry.value

    def newer_than(self, version: int) -> list[tuple[str, Entry]]:
        """Entries written after ``version``, oldest first."""
        newer = [(key, entry) for key, entry in self.entries.items() if entry.version > version]
        newer.sort(key=lambda item: item[1].version)
        return newer


class ClusterState:
    """Every member's state as this node knows it, its own included (``local_id``, written only here)."""

    def __init__(self, local_id: str, generation: int) -> None:
        self.local_id = local_id
        self._members: dict[str, MemberState] = {local_id: MemberState(generation)}
        self._forgotten: dict[str, int] = {}  # member -> the generation forgotten, and every older one
        # The digest, kept up to date with every write rather than built for every message (each exchange sends
        # one from either side): the members in the order of _members, three numbers each, and where they are.
        self._names: list[str] = [local_id]
        self._numbers: list[int] = [generation, 0, 0]
        self._slots: dict[str, int] = {local_id: 0}

    @property
    def local(self) -> MemberState:
        return self._members[self.local_id]

    def members(self) -> Mapping[str, MemberState]:
        return self._members

    def get(self, member: str) -> MemberState | None:
        return self._members.get(member)

    # --- the local member's writes -----------------------------------------------------------------------------

    def set_local(self, key: str, value: Any) -> bool:
        """Write a key of this node's own state under the next version; False when the value is already that."""
        local = self.local
        current = local.entries.get(key)
        if current is not None and current.value == value:
            return False
        if current is None and value is None:
            return False  # deleting what never was
        local.max_version += 1
        local.entries[key] = Entry(value, local.max_version)
        self._numbers[self._slots[self.local_id] + 1] = local.max_version
        return True

    # --- reconciliation ----------------------------------------------------------------------------------------

    def beat(self) -> None:
        """Advance this node's own heartbeat: the next digests it sends say it is alive."""
        self.local.heartbeat += 1
        self._numbers[self._slots[self.local_id] + 2] = self.local.heartbeat

    def digest(self) -> Digest:
        return Digest(self._names.copy(), self._numbers.copy())

    def take_heartbeats(self, remote: Mapping[str, Version]) -> list[str]:
        """Take the newer heartbeats a peer's digest tells of members known here (same generation); return them.

        A member known only under another generation gets its heartbeats once its state under that generation
        has arrived (a reset sets its heartbeat to 0).
        """
        beating: list[str] = []
        members, slots, own = self._members, self._slots, self._numbers
        local_id = self.local_id
        digest = Digest.of(remote)
        numbers = digest.numbers
        for member, generation, heartbeat in zip(digest.members, numbers[0::3], numbers[2::3], strict=True):
            state = members.get(member)
            if state is not None and heartbeat > state.heartbeat and state.generation == generation:
                if member != local_id:
                    state.heartbeat = heartbeat
                    own[slots[member] + 2] = heartbeat
                    beating.append(member)
        return beating

    def deltas_for(self, remote: Mapping[str, Version], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> list[Delta]:
        """What a node with digest ``remote`` lacks of what this node knows, at most ``max_entries`` entries.

        Members the remote knows least about go first (Scuttlebutt's "scuttle depth" order: the largest number
        of missing versions), so a bounded message spends itself where it helps most.
        """
        wanted: list[tuple[int, str, MemberState, int]] = []
        digest = Digest.of(remote)
        index, numbers = digest.index(), digest.numbers
        for member, state in self._members.items():
            at = index.get(member)
            since = 0
            if at is not None:
                generation = numbers[at]
                if generation > state.generation:
                    continue  # the remote has a newer incarnation of it: it will tell us
                if generation == state.generation:
                    since = numbers[at + 1]
            if state.max_version > since:
                wanted.append((state.max_version - since, member, state, since))
        wanted.sort(key=lambda item: (-item[0], item[1]))
        deltas: list[Delta] = []
        budget = max_entries
        for _, member, state, since in wanted:
            if budget <= 0:
                break
            entries = state.newer_than(since)[:budget]
            budget -= len(entries)
            deltas.append(Delta(member, state.generation, tuple(entries)))
        return deltas

    def apply(self, deltas: Iterable[Delta]) -> tuple[list[Reset], list[Update]]:
        """Take in what a peer sent: newer generations replace, newer versions overwrite, the rest is ignored.

        The local member's own state is never taken from a peer: deltas about it are old news of this node, or
        another node claiming its ID, which :meth:`claims_local` tells apart.
        """
        resets: list[Reset] = []
        updates: list[Update] = []
        for delta in deltas:
            member = delta.member
            if member == self.local_id or self._forgotten.get(member, -1) >= delta.generation:
                continue
            state = self._members.get(member)
            if state is None or delta.generation > state.generation:
                resets.append(Reset(member, delta.generation, None if state is None else state.generation))
                if state is None:
                    self._slots[member] = len(self._numbers)
                    self._names.append(member)
                    self._numbers.extend((0, 0, 0))
                state = self._members[member] = MemberState(delta.generation)
                self._note(member, state)
            elif delta.generation < state.generation:
                continue
            max_version = state.max_version
            for key, entry in delta.entries:
                current = state.entries.get(key)
                if current is not None and current.version >= entry.version:
                    continue
                state.entries[key] = entry
                if entry.version > state.max_version:
                    state.max_version = entry.version
                previous = None if current is None else current.value
                if previous != entry.value:
                    updates.append(Update(member, key, entry.value, previous))
            if state.max_version != max_version:
                self._note(member, state)
        return resets, updates

    def _note(self, member: str, state: MemberState) -> None:
        at = self._slots[member]
        self._numbers[at : at + 3] = (state.generation, state.max_version, state.heartbeat)

    def claims_local(self, deltas: Iterable[Delta]) -> int | None:
        """The generation of another node that gossips under this node's ID, if these deltas carry one.

        This node's own state comes back from peers with its own generation; any other generation is a second
        agent started with the same machine ID (or this agent's previous run, which is older and harmless).
        """
        own = self.local.generation
        for delta in deltas:
            if delta.member == self.local_id and delta.generation > own:
                return delta.generation
        return None

    def forget(self, member: str) -> None:
        """Drop a member from the view for good (it died long ago or left): only a newer generation brings it back."""
        if member == self.local_id:
            return
        state = self._members.pop(member, None)
        if state is not None:
            self._forgotten[member] = max(state.generation, self._forgotten.get(member, -1))
            self._names = list(self._members)
            states = self._members.values()
            self._numbers = list(chain.from_iterable((s.generation, s.max_version, s.heartbeat) for s in states))
            self._slots = dict(zip(self._names, range(0, len(self._numbers), 3), strict=True))

    def forgotten(self) -> Mapping[str, int]:
        return self._forgotten
