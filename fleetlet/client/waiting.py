"""Waiting until units reach the state a command set, as fleetctl's blocking commands waited.

After ``start``, ``load``, ``stop``, ``unload`` or ``destroy`` set what they set, the caller polls the API every
half second until each unit gets there. fleetctl waited forever for a unit that had failed on its machine; here a
start that fails, or a unit no machine can take, ends the wait for that unit. A failure the unit showed *before*
the command does not count: the machine may not have acted on the new desired state yet.

:func:`judge` is a pure function of one poll's view of one unit; :func:`wait_for` loops over an injected poll and
sleep, so tests drive it without a server or a clock. :mod:`fleetlet.client.poll` is the poll over the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from fleetlet.client.errors import UnitFailed, UnitGone, UnitUnplaceable, WaitFailed
from fleetlet.registry.model import DesiredState

POLL_INTERVAL: Final = 0.5  # seconds between polls, as fleetctl's

# launched, loaded, inactive: the unit's current state (fleet's job state); destroyed: the unit is gone.
Goal: TypeAlias = Literal["launched", "loaded", "inactive", "destroyed"]
# failed: its start failed on its machine; unplaceable: no machine can take it; gone: destroyed meanwhile.
Verdict: TypeAlias = Literal["reached", "failed", "unplaceable", "gone", "waiting"]
Sleep: TypeAlias = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class UnitProgress:
    """One unit as one poll saw it: what a wait returns once the unit got there.

    ``machine`` is where it is scheduled as fleetctl showed a machine (``1a2b3c4d.../10.0.0.5``), ``machine_id``
    the whole ID. ``active``, ``sub``, ``result`` and ``since`` are its state on that machine, of its current
    contents; empty (None) when that machine reports none, or only a state of contents the unit had before.
    """

    name: str
    current_state: DesiredState | None = None  # None: not in the cluster
    machine: str = ""
    active: str = ""
    sub: str = ""
    result: str = ""  # why it last ended, when the API says
    since: float | None = None  # when its active state last changed, when the API says
    reasons: tuple[str, ...] = ()  # why no machine can take it, when the API says
    # Said by ``machine`` already, for the judging; carried for programs that go on to ask about the machine.
    machine_id: str | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        return self.active == "failed"


Poll: TypeAlias = Callable[[Sequence[str]], Awaitable[Mapping[str, UnitProgress]]]
Settled: TypeAlias = Callable[[UnitProgress, Verdict], None]


def judge(goal: Goal, seen: UnitProgress, *, stale_failure: bool = False) -> Verdict:
    """Where ``seen`` stands with respect to ``goal``; ``stale_failure``: its failure predates the command."""
    if seen.current_state is None:
        return "reached" if goal == "destroyed" else "gone"
    if goal == "destroyed":
        return "waiting"
    if goal == "launched":
        if seen.current_state == "launched" and seen.active == "active":
            return "reached"
        if seen.failed and not stale_failure:
            return "failed"
    elif goal == "loaded":
        # Deactivating counts as loaded in the API, but the unit is not stopped yet: a restart that started it
        # then would see the stop's own failure, if it ends in one, as the start's.
        if seen.current_state == "loaded" and seen.active != "deactivating":
            return "reached"
    elif seen.current_state == goal:
        return "reached"
    if goal != "inactive" and not seen.machine and seen.reasons:
        return "unplaceable"
    return "waiting"


def same_failure(before: UnitProgress, now: UnitProgress) -> bool:
    """Whether ``now`` may still be the failure ``before`` showed: nothing tells a new failure from the old one but
    a change of ``since`` or ``result`` (when the API gives them), or a state in between (see :func:`wait_for`)."""
    return before.failed and now.failed and (before.since, before.result) == (now.since, now.result)


def problem(verdict: Verdict, seen: UnitProgress) -> WaitFailed:
    """The error of a unit that cannot get there."""
    if verdict == "failed":
        return UnitFailed(seen)
    if verdict == "unplaceable":
        return UnitUnplaceable(seen)
    if verdict == "gone":
        return UnitGone(seen)
    raise ValueError(f"{seen.name} is not stuck: {verdict}")


async def wait_for(
    names: Sequence[str],
    goal: Goal,
    poll: Poll,
    *,
    attempts: int,
    sleep: Sleep,
    settled: Settled,
    before: Mapping[str, UnitProgress] | None = None,
    expired: Callable[[], bool] | None = None,
) -> list[UnitProgress]:
    """Poll until each of ``names`` has reached ``goal`` or cannot; each one goes to ``settled`` as it settles.

    At most ``attempts`` polls (0: no limit), ``POLL_INTERVAL`` apart, and none after ``expired()`` says the time
    allowed is up. ``before`` is what a poll saw before the command acted: a failure shown then is ignored until
    the unit shows another state or another failure. Returns the units still on their way when the attempts or
    the time ran out, as the last poll saw them.
    """
    pending = list(dict.fromkeys(names))
    earlier = dict(before or {})
    stale = {name for name, seen in earlier.items() if seen.failed}
    polls = 0
    while True:
        seen_now = await poll(pending)
        polls += 1
        still: list[UnitProgress] = []
        for name in pending:
            seen = seen_now.get(name, UnitProgress(name))
            if name in stale and not same_failure(earlier[name], seen):
                stale.discard(name)
            verdict = judge(goal, seen, stale_failure=name in stale)
            if verdict == "waiting":
                still.append(seen)
            else:
                settled(seen, verdict)
        pending = [seen.name for seen in still]
        if not pending or (attempts and polls >= attempts) or (expired is not None and expired()):
            return still
        await sleep(POLL_INTERVAL)
