"""fleetctl's words for the blocking commands' waits: the line of each unit as it settles, and the timeout's.

After ``start``, ``load``, ``stop``, ``unload`` or ``destroy`` set what they set, the command waits as the client
does (:mod:`fleetlet.client.waiting`) and prints fleetctl's line for each unit as it gets there (``Unit
hello.service launched on 1a2b3c4d.../10.0.0.5``), or a line on stderr for one that cannot. ``--block-attempts
N`` bounds the polls; 0, fleetctl's default, never gives up.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetlet.client.waiting import Goal, UnitProgress, Verdict, problem


def reached_line(goal: Goal, seen: UnitProgress) -> str:
    """fleetctl's line for a unit that got there: ``Unit hello.service loaded on 1a2b3c4d.../10.0.0.5``."""
    if goal == "destroyed":
        return f"Destroyed {seen.name}"
    line = f"Unit {seen.name} {seen.current_state}"
    return f"{line} on {seen.machine}" if seen.machine else line


def problem_line(verdict: Verdict, seen: UnitProgress) -> str:
    """The line, for stderr, of a unit that cannot get there: the message of the client's error for it."""
    return str(problem(verdict, seen))


def timeout_message(goal: Goal, still: Sequence[UnitProgress], attempts: int) -> str:
    """One line naming each unit that did not get there, and where it stood."""
    polls = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    units = ", ".join(f"{seen.name} ({describe(seen)})" for seen in still)
    return f"Error waiting for units: not {goal} after {polls}: {units}"


def describe(seen: UnitProgress) -> str:
    """``loaded on 1a2b3c4d.../10.0.0.5, activating/start-pre``."""
    if seen.current_state is None:
        return "gone"
    text = f"{seen.current_state} on {seen.machine}" if seen.machine else seen.current_state
    return f"{text}, {seen.active}/{seen.sub}" if seen.active else text
