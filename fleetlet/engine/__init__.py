"""The leader's side of fleetlet: where units run. For now the pure scheduler and its snapshot."""

from fleetlet.engine.scheduler import Decision, GlobalVerdict, Plan, runs_global, schedule
from fleetlet.engine.snapshot import MachineSpec, Snapshot, UnitSpec

__all__ = ["Decision", "GlobalVerdict", "MachineSpec", "Plan", "Snapshot", "UnitSpec", "runs_global", "schedule"]
