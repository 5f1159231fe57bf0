"""What a member tells the cluster about itself, as the values of its gossiped state.

A member's state (:mod:`fleetlet.cluster.state`) holds these keys:

- ``machine``: its :class:`MachineRecord` (ID, API address, public IP, metadata, capacity, agent version);
- ``left``: true once it leaves the cluster on purpose (an agent shutting down);
- ``unit/<name>``: the state of one of its units, as a JSON object, or a tombstone once the unit left it.

(Its heartbeat travels in the digests, beside this state: :mod:`fleetlet.cluster.state`.) Values come from peers,
so decoding checks them: a malformed record is refused (:class:`ProtocolError`), never
half-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from fleetlet.cluster.errors import ProtocolError
from fleetlet.engine.snapshot import MachineSpec

MACHINE_KEY: Final = "machine"
LEFT_KEY: Final = "left"
UNIT_PREFIX: Final = "unit/"


def unit_state_key(unit: str) -> str:
    return f"{UNIT_PREFIX}{unit}"


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class MachineRecord:
    """A member as the others see it. ``address`` is its API's base URL, where its gossip endpoint also is."""

    id: str
    address: str
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    capacity: Mapping[str, int] = field(default_factory=dict, hash=False)
    version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen(self.metadata))
        object.__setattr__(self, "capacity", _frozen(self.capacity))

    @property
    def spec(self) -> MachineSpec:
        """The machine as the scheduler sees it."""
        return MachineSpec(self.id, self.metadata, self.public_ip)

    def to_value(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "publicIP": self.public_ip,
            "metadata": dict(self.metadata),
            "capacity": dict(self.capacity),
            "version": self.version,
        }

    @classmethod
    def from_value(cls, machine_id: str, value: object) -> MachineRecord:
        if not isinstance(value, dict):
            raise ProtocolError(f"machine record of {machine_id} is not an object")
        address, public_ip, version = value.get("address"), value.get("publicIP"), value.get("version")
        metadata, capacity = value.get("metadata"), value.get("capacity")
        if not (isinstance(address, str) and isinstance(public_ip, str) and isinstance(version, str)):
            raise ProtocolError(f"machine record of {machine_id}: address, publicIP and version must be strings")
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ProtocolError(f"machine record of {machine_id}: metadata must map strings to strings")
        if not isinstance(capacity, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in capacity.items()
        ):
            raise ProtocolError(f"machine record of {machine_id}: capacity must map strings to integers")
        return cls(machine_id, address, public_ip, metadata, capacity, version)
