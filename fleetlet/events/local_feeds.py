"""What this agent itself sees, as events: its units' states, its machine, and its engine's leadership and placement.

Each feed is a callback target for the component that knows: the supervisor's ``publish`` and ``on_unload``, the
local machine's metadata listener, the engine's ``on_leadership`` and ``on_unplaceable``. They run synchronously in
the caller's task and only publish into the hub, which never blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from fleetlet.agent.machine import LocalMachine
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.events.hub import EventHub
from fleetlet.events.model import LEADER_KEY, state_key
from fleetlet.events.registry_diff import REASON_NO_MACHINE
from fleetlet.service.states import UnitStatus

# What makes a status a new state: a status republished with only its timestamps or counters changed is not an event.
_STATE_FIELDS: Final = ("load", "active", "sub", "result")


class StateFeed:
    """Publishes the states of this machine's units: ``changed`` when one moves, ``removed`` when its actor leaves.

    Wire ``publish`` as the supervisor's ``publish`` and ``removed`` as its ``on_unload``.
    """

    def __init__(self, hub: EventHub, machine_id: str) -> None:
        self._hub = hub
        self._machine_id = machine_id

    def publish(self, status: UnitStatus) -> None:
        self.changed(state_payload(status, self._machine_id))

    def removed(self, unit: str) -> None:
        """The unit's actor left this machine; nothing to say of a unit that never published a state here."""
        self.gone(unit, self._machine_id)

    # Also the way in for the states other machines gossip: the same payload, another machine.

    def changed(self, payload: Mapping[str, Any]) -> None:
        """A unit's state on a machine, as :func:`state_payload` makes it; nothing when only timestamps moved."""
        key = state_key(payload["name"], payload["machineID"])
        latest = self._hub.latest("state", key)
        previous = latest.payload if latest is not None else None
        if previous is not None and all(previous.get(f) == payload.get(f) for f in (*_STATE_FIELDS, "hash")):
            return
        event = dict(payload)
        if previous is not None:
            event["previous"] = {field: previous[field] for field in _STATE_FIELDS}
        self._hub.publish("state", "changed", key, event)

    def gone(self, unit: str, machine_id: str) -> None:
        """The unit has no state on the machine any more."""
        key = state_key(unit, machine_id)
        latest = self._hub.latest("state", key)
        if latest is None:
            return
        payload = {
            "name": unit,
            "machineID": machine_id,
            "previous": {field: latest.payload[field] for field in _STATE_FIELDS},
        }
        self._hub.publish("state", "removed", key, payload, gone=True)


def state_payload(status: UnitStatus, machine_id: str) -> dict[str, Any]:
    """A unit's state as events carry it, and as its machine gossips it to the others."""
    payload: dict[str, Any] = {
        "name": status.name,
        "machineID": machine_id,
        "hash": status.hash,
        "load": status.load,
        "active": status.active,
        "sub": status.sub,
        "result": status.result,
        "since": status.since,
        "restarts": status.restarts,
    }
    if status.container_id:
        payload["containerID"] = status.container_id
    return payload


class MachineFeed:
    """Publishes this machine: ``joined`` on :meth:`start`, ``metadata-changed`` whenever its metadata changes."""

    def __init__(self, hub: EventHub, machine: LocalMachine) -> None:
        self._hub = hub
        self._machine = machine
        self._metadata: Mapping[str, str] = MappingProxyType({})

    def start(self) -> None:
        """Announce the machine and follow its metadata; call once, when the agent starts."""
        self._metadata = self._machine.spec.metadata
        self._hub.publish("machine", "joined", self._machine.id, self._payload())
        self._machine.subscribe(self._metadata_changed)

    def _metadata_changed(self) -> None:
        previous, self._metadata = self._metadata, self._machine.spec.metadata
        if dict(previous) == dict(self._metadata):
            return
        payload = self._payload()
        if previous:
            payload["previousMetadata"] = dict(previous)
        self._hub.publish("machine", "metadata-changed", self._machine.id, payload)

    def _payload(self) -> dict[str, Any]:
        return machine_payload(self._machine.spec)


def machine_payload(spec: MachineSpec) -> dict[str, Any]:
    """A machine as ``machine`` events carry it, this one's or another's."""
    payload: dict[str, Any] = {"id": spec.id}
    if spec.public_ip:
        payload["primaryIP"] = spec.public_ip
    if spec.metadata:
        payload["metadata"] = dict(spec.metadata)
    return payload


class LeaderFeed:
    """Publishes this engine's terms: ``elected`` when one starts, ``lost`` when it ends. Wire as ``on_leadership``."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    def leadership(self, machine_id: str, term: int, leading: bool) -> None:
        payload = {"machineID": machine_id, "term": term}
        if leading:
            self._hub.publish("leader", "elected", LEADER_KEY, payload)
        else:
            self._hub.publish("leader", "lost", LEADER_KEY, payload, gone=True)


class PlacementFeed:
    """Publishes why no machine can take a unit that wants one, when its reasons appear or change.

    Wire :meth:`unplaceable` as the engine's ``on_unplaceable`` and :meth:`reasons` as the registry feed's
    ``reasons``. A unit still placed when its reasons appear is about to be unplaced by the engine: the registry
    feed's ``unplaced`` then carries the reasons, so that one happening is one event. A unit whose reasons
    disappear gets nothing here: its ``placed`` follows from the registry.
    """

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._reasons: Mapping[str, tuple[str, ...]] = MappingProxyType({})

    def reasons(self, unit: str) -> tuple[str, ...]:
        """Why no machine can take ``unit`` as of the engine's latest pass; empty when it can or nobody knows."""
        return self._reasons.get(unit, ())

    def unplaceable(self, reasons: Mapping[str, tuple[str, ...]]) -> None:
        previous, self._reasons = self._reasons, MappingProxyType(dict(reasons))
        for name, why in sorted(reasons.items()):
            if previous.get(name) == why or self._hub.latest("schedule", name) is not None:
                continue
            payload = {"name": name, "reason": REASON_NO_MACHINE, "reasons": list(why)}
            self._hub.publish("schedule", "unplaced", name, payload, gone=True)
