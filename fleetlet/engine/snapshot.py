"""What the scheduler sees: units with their requirements and desired state, machines, the recorded schedule.

A snapshot is plain frozen data, built by the engine from the registry and the membership view, so that the
scheduler stays a pure function that tests can drive from tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from fleetlet.units.xfleet import SHORT_ID_LENGTH, Requirements

DesiredState = Literal["inactive", "loaded", "launched"]


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """A unit as the scheduler needs it: its name, its ``[X-Fleet]`` requirements and its desired state."""

    name: str
    requirements: Requirements = field(default_factory=Requirements)
    desired: DesiredState = "launched"

    @property
    def wants_machine(self) -> bool:
        """Whether the unit should be on a machine: only submitted (inactive) units are not."""
        return self.desired != "inactive"


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """A live machine.

    ``metadata`` holds one value per key, as fleet's machines did: the agent's ``--metadata k=v,...``, the
    v1 API's ``metadata`` object and its PATCH operations all carry one string per key. A unit's
    ``MachineMetadata`` may still allow several values for a key.
    """

    id: str
    metadata: Mapping[str, str] = field(default_factory=_empty, hash=False)
    public_ip: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @property
    def short_id(self) -> str:
        """The first 8 characters of the ID, as fleetctl shows machines and as reasons name them."""
        return self.id[:SHORT_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Units, live machines, and the schedule as recorded (unit name -> machine ID)."""

    units: tuple[UnitSpec, ...] = ()
    machines: tuple[MachineSpec, ...] = ()
    schedule: Mapping[str, str] = field(default_factory=_empty, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(self.units))
        object.__setattr__(self, "machines", tuple(self.machines))
        object.__setattr__(self, "schedule", MappingProxyType(dict(self.schedule)))
