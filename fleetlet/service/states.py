"""A unit's state as systemd names it, and the snapshots an actor publishes.

``active`` is the high-level state (``inactive``, ``activating``, ``active``, ``deactivating``, ``failed``,
``reloading``); ``sub`` says where in the service's life it is (``start-pre``, ``running``, ``stop-sigterm``,
...); ``result`` is why it last ended (``success``, ``exit-code``, ``signal``, ``timeout``, ``start-limit-hit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LoadState = Literal["loaded", "not-found", "error"]
ActiveState = Literal["inactive", "activating", "active", "deactivating", "failed", "reloading"]
SubState = Literal[
    "dead",
    "start-pre",
    "start",
    "start-post",
    "running",
    "exited",
    "reload",
    "stop",
    "stop-sigterm",
    "stop-sigkill",
    "stop-post",
    "final-sigterm",
    "final-sigkill",
    "auto-restart",
    "failed",
]
Result = Literal[
    "success", "exit-code", "signal", "core-dump", "timeout", "watchdog", "start-limit-hit", "resources", "oom-kill"
]

# The active state each sub-state belongs to, as systemd maps them for services.
ACTIVE_OF: dict[SubState, ActiveState] = {
    "dead": "inactive",
    "start-pre": "activating",
    "start": "activating",
    "start-post": "activating",
    "running": "active",
    "exited": "active",
    "reload": "reloading",
    "stop": "deactivating",
    "stop-sigterm": "deactivating",
    "stop-sigkill": "deactivating",
    "stop-post": "deactivating",
    "final-sigterm": "deactivating",
    "final-sigkill": "deactivating",
    "auto-restart": "activating",
    "failed": "failed",
}


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """One published snapshot of a unit on this machine (what ``list-units`` and the event stream show)."""

    name: str
    hash: str
    load: LoadState = "loaded"
    active: ActiveState = "inactive"
    sub: SubState = "dead"
    result: Result = "success"
    since: float = 0.0  # wall time of the last change of ``active``
    restarts: int = 0  # automatic restarts since the last manual start
    container_id: str | None = None
    main_pid: int | None = None
    exit_status: str | None = None  # the main process's last end, in systemd's words

    def describe(self) -> str:
        return f"{self.load} {self.active} {self.sub}"
