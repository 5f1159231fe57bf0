"""When a service restarts by itself: systemd's ``Restart=`` table, and the start rate limit.

Pure functions and a small value object, so the whole table is tested without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetlet.service.states import Result
from fleetlet.units.service import RestartPolicy


def restarts(policy: RestartPolicy, result: Result, *, stopped_by_request: bool) -> bool:
    """Whether a service that ended with ``result`` is restarted under ``policy``: systemd.service(5)'s Table 2,
    written as systemd decides it, so results the table has no row for (``resources``, ``oom-kill``) fall where
    systemd puts them.

    A stop someone asked for never restarts, and neither does a start refused by the start limit.
    """
    if stopped_by_request or result == "start-limit-hit":
        return False
    match policy:
        case "no":
            return False
        case "always":
            return True
        case "on-success":
            return result == "success"
        case "on-failure":
            return result != "success"
        case "on-abnormal":  # anything but a clean exit or an unclean exit code
            return result not in ("success", "exit-code")
        case "on-abort":
            return result in ("signal", "core-dump")
        case "on-watchdog":
            return result == "watchdog"


@dataclass(slots=True)
class StartLimit:
    """systemd's start rate limit: at most ``burst`` starts in a window of ``interval`` seconds (0 turns it off).

    As systemd counts: the window opens at the first attempt and a new one opens once more than ``interval`` has
    passed since; every attempt in a window counts, the refused ones included, so a unit hammering at the limit
    stays refused until the window ends.
    """

    interval: float
    burst: int
    _window_start: float | None = None
    _attempts: int = 0

    def allow(self, now: float) -> bool:
        """Record a start attempt at ``now``; False when the window has seen more than ``burst`` attempts."""
        if self.interval <= 0 or self.burst <= 0:
            return True
        if self._window_start is None or now - self._window_start > self.interval:
            self._window_start = now
            self._attempts = 1
            return True
        self._attempts += 1
        return self._attempts <= self.burst

    def reset(self) -> None:
        self._window_start = None
        self._attempts = 0
