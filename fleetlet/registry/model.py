"""What the registry holds: unit records, the schedule, the leader record, and the changes a watch yields.

Every write gets the next value of one global, strictly increasing revision; each record carries the revision of
the write that last changed it (its *mod revision*), which conditional writes compare against. Changes are named by
keys laid out as the etcd backend stores them, so a watch filters on a key prefix the same way everywhere::

    units/<name>                    UnitRecord
    schedule/<machine>/<unit>       ScheduleEntry   (one prefix per machine: an agent watches only its own)
    leader                          LeaderRecord

One write may change several keys (moving a unit deletes ``schedule/A/u`` and puts ``schedule/B/u``; deleting a
unit also drops its schedule entry): its changes share the write's revision, as in etcd.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

from fleetlet.registry.errors import LeadershipLost, RegistryConflict

DesiredState: TypeAlias = Literal["inactive", "loaded", "launched"]
DESIRED_STATES: tuple[DesiredState, ...] = get_args(DesiredState)
ChangeKind: TypeAlias = Literal["put", "delete"]

UNITS_PREFIX = "units/"
SCHEDULE_PREFIX = "schedule/"
LEADER_KEY = "leader"


def unit_key(name: str) -> str:
    return f"{UNITS_PREFIX}{name}"


def schedule_prefix(machine_id: str) -> str:
    """The prefix of one machine's schedule: what that machine's agent watches."""
    return f"{SCHEDULE_PREFIX}{machine_id}/"


def schedule_key(machine_id: str, unit: str) -> str:
    return f"{schedule_prefix(machine_id)}{unit}"


def text_hash(text: str) -> str:
    """SHA1 of a unit's normalized text: equal to ``UnitFile.hash`` when ``text`` is ``UnitFile.serialize()``."""
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def check_desired_state(state: str) -> DesiredState:
    if state not in DESIRED_STATES:
        raise ValueError(f"desired state must be one of {', '.join(DESIRED_STATES)}, not {state!r}")
    return state


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """A unit as submitted: its normalized text, that text's SHA1, what the user wants of it."""

    name: str
    text: str
    hash: str
    desired_state: DesiredState
    revision: int


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """The leader's decision that ``unit`` runs on ``machine_id``."""

    unit: str
    machine_id: str
    revision: int


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """Who leads, since which revision, until when.

    ``revision`` is the write that made this machine leader; renewals keep it (as an etcd lease keep-alive keeps the
    key's revision), so it names one term and serves as a fencing token. ``expires_at`` is wall-clock seconds on the
    registry's clock (``Clock.time``): the record outlives the process, and a monotonic clock does not.
    """

    machine_id: str
    revision: int
    expires_at: float


Value: TypeAlias = UnitRecord | ScheduleEntry | LeaderRecord


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change at ``revision``: its new value, or None when ``kind`` is ``delete``."""

    revision: int
    kind: ChangeKind
    key: str
    value: Value | None


@dataclass(frozen=True, slots=True)
class UnitPage:
    """One page of units sorted by name, read at ``revision``; ``next_token`` asks for the next page (None: last)."""

    units: tuple[UnitRecord, ...]
    next_token: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """The schedule (or one machine's part of it) as of ``revision``: unit name → entry."""

    entries: dict[str, ScheduleEntry]
    revision: int


def page_token(last_name: str) -> str:
    """An opaque token for the page after ``last_name``."""
    return base64.urlsafe_b64encode(last_name.encode("utf-8")).decode("ascii").rstrip("=")


def token_name(token: str | None) -> str | None:
    """The name a page token continues after; ValueError on a token this module did not make."""
    if token is None:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid page token {token!r}") from exc


def check_term(term: int | None, current: LeaderRecord | None, now: float) -> None:
    """Raise LeadershipLost when a fenced write's term is not the leader record's, unexpired, at ``now``."""
    live = current if current is not None and current.expires_at > now else None
    if term is not None and (live is None or live.revision != term):
        holder = f"machine {live.machine_id} leads (term {live.revision})" if live else "nobody leads"
        raise LeadershipLost(LEADER_KEY, term, live.revision if live else 0, f"term {term} is over: {holder}")


def check_conflict(key: str, expect_revision: int | None, actual: int) -> None:
    """Raise RegistryConflict when a conditional write's expectation does not hold."""
    if expect_revision is not None and expect_revision != actual:
        raise RegistryConflict(key, expect_revision, actual)
