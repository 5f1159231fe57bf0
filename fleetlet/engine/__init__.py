"""The leader's side of fleetlet: where units run. The pure scheduler, its snapshot, and the engine that leads."""

from fleetlet.engine.engine import Engine, describe
from fleetlet.engine.mirror import RegistryMirror
from fleetlet.engine.scheduler import Decision, GlobalVerdict, Plan, runs_global, schedule
from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec

__all__ = [
    "Decision",
    "Engine",
    "GlobalVerdict",
    "MachineSpec",
    "Plan",
    "RegistryMirror",
    "Snapshot",
    "UnitSpec",
    "describe",
    "runs_global",
    "schedule",
]
