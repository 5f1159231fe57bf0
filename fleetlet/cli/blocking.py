"""Waiting until units reach the state a command set, as fleetctl's blocking commands waited.

After ``start``, ``load``, ``stop``, ``unload`` or ``destroy`` set what they set, the command polls the API every
half second until each unit gets there, and prints fleetctl's line for it as it does (``Unit hello.service launched
on 1a2b3c4d.../10.0.0.5``). ``--block-attempts N`` bounds the polls; 0, fleetctl's default, never gives up.

fleetctl waited forever for a unit that had failed on its machine; here a start that fails, or a unit no machine
can take, ends the wait for that unit with a line on stderr. A failure the unit showed *before* the command does
not count: the machine may not have acted on the new desired state yet.

:func:`judge` is a pure function of one poll's view of one unit; :func:`wait_for` loops over an injected poll and
sleep, so tests drive it without a server or a clock. :mod:`fleetlet.cli.cluster_poll` is the poll over the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from fleetlet.registry.model import DesiredState

POLL_INTERVAL: Final = 0.5  # seconds between polls, as fleetctl's

# launched, loaded, inactive: the unit's current state (fleet's job state); destroyed: the unit is gone.
Goal: TypeAlias = Literal["launched", "loaded", "inactive", "destroyed"]
# failed: its start failed on its machine; unplaceable: no machine can take it; gone: destroyed meanwhile.
Verdict: TypeAlias = Literal["reached", "failed", "unplaceable", "gone", "waiting"]
Sleep: TypeAlias = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Seen:
    """One unit as one poll saw it.

    ``active``, ``sub``, ``result`` and ``since`` are its state on the machine it is scheduled to, of its current
    contents; empty (None) when that machine reports none, or only a state of contents the unit had before.
    """

    name: str
    current_state: DesiredState | None = None  # None: not in the cluster
    machine: str = ""  # where it is scheduled, as fleetctl showed a machine: "1a2b3c4d.../10.0.0.5"
    active: str = ""
    sub: str = ""
    result: str = ""  # why it last ended, when the API says
    since: float | None = None  # when its active state last changed, when the API says
    reasons: tuple[str, ...] = ()  # why no machine can take it, when the API says

    @property
    def failed(self) -> bool:
        return self.active == "failed"


Poll: TypeAlias = Callable[[Sequence[str]], Awaitable[Mapping[str, Seen]]]
Settled: TypeAlias = Callable[[Seen, Verdict], None]


def judge(goal: Goal, seen: Seen, *, stale_failure: bool = False) -> Verdict:
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


def same_failure(before: Seen, now: Seen) -> bool:
    """Whether ``now`` may still be the failure ``before`` showed: nothing tells a new failure from the old one but
    a change of ``since`` or ``result`` (when the API gives them), or a state in between (see :func:`wait_for`)."""
    return before.failed and now.failed and (before.since, before.result) == (now.since, now.result)


async def wait_for(
    names: Sequence[str],
    goal: Goal,
    poll: Poll,
    *,
    attempts: int,
    sleep: Sleep,
    settled: Settled,
    before: Mapping[str, Seen] | None = None,
) -> list[Seen]:
    """Poll until each of ``names`` has reached ``goal`` or cannot; each one goes to ``settled`` as it settles.

    At most ``attempts`` polls (0: no limit), ``POLL_INTERVAL`` apart. ``before`` is what a poll saw before the
    command acted: a failure shown then is ignored until the unit shows another state or another failure.
    Returns the units still on their way when the attempts ran out, as the last poll saw them.
    """
    pending = list(dict.fromkeys(names))
    earlier = dict(before or {})
    stale = {name for name, seen in earlier.items() if seen.failed}
    polls = 0
    while True:
        seen_now = await poll(pending)
        polls += 1
        still: list[Seen] = []
        for name in pending:
            seen = seen_now.get(name, Seen(name))
            if name in stale and not same_failure(earlier[name], seen):
                stale.discard(name)
            verdict = judge(goal, seen, stale_failure=name in stale)
            if verdict == "waiting":
                still.append(seen)
            else:
                settled(seen, verdict)
        pending = [seen.name for seen in still]
        if not pending or (attempts and polls >= attempts):
            return still
        await sleep(POLL_INTERVAL)


def reached_line(goal: Goal, seen: Seen) -> str:
    """fleetctl's line for a unit that got there: ``Unit hello.service loaded on 1a2b3c4d.../10.0.0.5``."""
    if goal == "destroyed":
        return f"Destroyed {seen.name}"
    line = f"Unit {seen.name} {seen.current_state}"
    return f"{line} on {seen.machine}" if seen.machine else line


def problem_line(verdict: Verdict, seen: Seen) -> str:
    """The line, for stderr, of a unit that cannot get there."""
    if verdict == "failed":
        result = f" ({seen.result})" if seen.result else ""
        return f"Unit {seen.name} failed on {seen.machine}: {seen.active}/{seen.sub}{result}"
    if verdict == "unplaceable":
        return f"Unit {seen.name} cannot be placed: {'; '.join(seen.reasons)}"
    if verdict == "gone":
        return f"Unit {seen.name} no longer exists"
    raise ValueError(f"{seen.name} is not stuck: {verdict}")


def timeout_message(goal: Goal, still: Sequence[Seen], attempts: int) -> str:
    """One line naming each unit that did not get there, and where it stood."""
    polls = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    units = ", ".join(f"{seen.name} ({describe(seen)})" for seen in still)
    return f"Error waiting for units: not {goal} after {polls}: {units}"


def describe(seen: Seen) -> str:
    """``loaded on 1a2b3c4d.../10.0.0.5, activating/start-pre``."""
    if seen.current_state is None:
        return "gone"
    text = f"{seen.current_state} on {seen.machine}" if seen.machine else seen.current_state
    return f"{text}, {seen.active}/{seen.sub}" if seen.active else text
