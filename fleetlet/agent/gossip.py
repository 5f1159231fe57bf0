"""This agent in the cluster's gossip: what it says of itself, and what it hears of the others.

It owns the gossiper and its websocket dialer and endpoint (served on the agent's API at ``/v1/gossip``), keeps
the gossiped machine record in step with the local machine (metadata changes spread by gossip), publishes the
states of this machine's units to the others, and turns what it hears into the node's events: ``machine``
events for the other members (joined, metadata-changed, suspect, alive, dead, left, removed) and ``state``
events for their units. Whoever decides from the membership (the engine) subscribes with :meth:`subscribe`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fleetlet import __version__
from fleetlet.agent.machine import LocalMachine
from fleetlet.api.view import UnitState
from fleetlet.clock import Clock
from fleetlet.cluster.gossiper import Gossiper, GossipSettings
from fleetlet.cluster.membership import MembershipEvent, Status
from fleetlet.cluster.records import MachineRecord
from fleetlet.cluster.websocket import GossipEndpoint, WebSocketDialer
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.events.hub import EventHub
from fleetlet.events.local_feeds import StateFeed, machine_payload, state_payload
from fleetlet.service.states import UnitStatus

log = logging.getLogger("fleetlet.agent")


class AgentGossip:
    def __init__(
        self,
        machine: LocalMachine,
        hub: EventHub,
        states: StateFeed,
        clock: Clock,
        *,
        key: bytes | None,
        seeds: Sequence[str],
        settings: GossipSettings,
        capacity: Mapping[str, int],
    ) -> None:
        self._machine = machine
        self._hub = hub
        self._states = states
        self._capacity = dict(capacity)
        self._address = ""
        self._listeners: list[Callable[[], None]] = []
        self.dialer = WebSocketDialer(key)
        self.gossiper = Gossiper(
            self._record(),
            self.dialer,
            clock,
            settings=settings,
            seeds=seeds,
            on_event=self._membership_changed,
            on_unit_state=self._peer_unit_state,
        )
        self.endpoint = GossipEndpoint(self.gossiper, key)
        machine.subscribe(self._machine_changed)

    def bind(self, address: str) -> None:
        """The API's address, once bound: where the other members reach this one."""
        self._address = address
        self.gossiper.set_record(self._record())

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the placeable members or their metadata change."""
        self._listeners.append(listener)

    # --- this machine's units, out -------------------------------------------------------------------------------

    def publish(self, status: UnitStatus) -> None:
        self.gossiper.set_unit_state(status.name, state_payload(status, self._machine.id))

    def removed(self, unit: str) -> None:
        self.gossiper.set_unit_state(unit, None)

    # --- the cluster, in ---------------------------------------------------------------------------------------------

    def machines(self) -> list[MachineSpec]:
        """The placeable members (alive or suspect), this machine among them."""
        return [record.spec for record in self.gossiper.placeable()]

    def peer_states(self) -> list[UnitState]:
        """The states the other placeable members report of their units."""
        states: list[UnitState] = []
        for member, unit, state in self.gossiper.unit_states():
            if member == self._machine.id or not isinstance(state, dict):
                continue
            try:
                states.append(UnitState(unit, state["hash"], member, state["load"], state["active"], state["sub"]))
            except KeyError:
                log.warning("ignoring a malformed state of %s from machine %s", unit, member[:8])
        return states

    def _record(self) -> MachineRecord:
        spec = self._machine.spec
        return MachineRecord(spec.id, self._address, spec.public_ip, spec.metadata, self._capacity, __version__)

    def _machine_changed(self) -> None:
        self.gossiper.set_record(self._record())

    def _membership_changed(self, event: MembershipEvent) -> None:
        payload: dict[str, Any] = machine_payload(event.record.spec)
        payload["address"] = event.record.address
        payload["reason"] = event.reason
        self._hub.publish("machine", event.type, event.member, payload, gone=event.type == "removed")
        if event.type in ("dead", "left"):
            # Its units' states are no longer anyone's word: they leave list-units and the stream's snapshot.
            for member, unit, _ in self.gossiper.unit_states(frozenset({Status.DEAD, Status.LEFT})):
                if member == event.member:
                    self._states.gone(unit, member)
        for listener in self._listeners:
            listener()

    def _peer_unit_state(self, member: str, unit: str, state: Any) -> None:
        if state is None:
            self._states.gone(unit, member)
        elif isinstance(state, dict) and state.get("name") == unit and state.get("machineID") == member:
            self._states.changed(state)
