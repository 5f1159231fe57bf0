"""This machine as the cluster sees it: its ID, public IP and metadata, which may change while the agent runs.

Metadata changes through ``PATCH /fleet/v1/machines`` and on SIGHUP (reloaded from the config file). Whoever
decides from it subscribes: the engine schedules again, the reconciler looks again at which global units run here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fleetlet.engine.snapshot import MachineSpec

log = logging.getLogger("fleetlet.agent")


class LocalMachine:
    def __init__(self, spec: MachineSpec) -> None:
        self._spec = spec
        self._listeners: list[Callable[[], None]] = []

    @property
    def spec(self) -> MachineSpec:
        return self._spec

    @property
    def id(self) -> str:
        return self._spec.id

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change of the metadata."""
        self._listeners.append(listener)

    def set_metadata(self, metadata: Mapping[str, str]) -> bool:
        """Replace the metadata; True when it changed (the listeners then ran)."""
        if dict(metadata) == dict(self._spec.metadata):
            return False
        self._spec = MachineSpec(self._spec.id, metadata, self._spec.public_ip)
        log.info("metadata of machine %s now %s", self._spec.short_id, _describe(metadata))
        for listener in self._listeners:
            listener()
        return True


def _describe(metadata: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(metadata.items())) or "(none)"
