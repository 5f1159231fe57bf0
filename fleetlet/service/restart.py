"""When a service restarts by itself: systemd's ``Restart=`` table, and the start rate limit.

Pure functions and a small value object, so the whole table is tested without running anything.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

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
    """systemd's start rate limit: at most ``burst`` starts within any ``interval`` seconds (0 turns it off)."""

    interval: float
    burst: int
    _starts: deque[float] = field(default_factory=deque)

    def allow(self, now: float) -> bool:
        """Record a start attempt at ``now``; False when it would exceed the limit (and is not recorded)."""
        if self.interval <= 0 or self.burst <= 0:
            return True
        while self._starts and now - self._starts[0] >= self.interval:
            self._starts.popleft()
        if len(self._starts) >= self.burst:
            return False
        self._starts.append(now)
        return True

    def reset(self) -> None:
        self._starts.clear()
