"""Desired state shared by the cluster: units, the schedule, the leader record, with revisions and watches.

:class:`Registry` is the port; :class:`MemoryRegistry` (tests) and :class:`SqliteRegistry` (the embedded
default) implement it, and so do :mod:`fleetlet.registry.remote` (the server's registry, for joined agents) and
:mod:`fleetlet.registry.etcd` (etcd v3), imported from their modules so that what needs neither does not load
aiohttp. Errors: see :mod:`fleetlet.registry.errors`.
"""

from fleetlet.registry.errors import (
    LeadershipLost,
    RegistryAuthError,
    RegistryClosed,
    RegistryConflict,
    RegistryError,
    RevisionCompacted,
    UnitNotFound,
)
from fleetlet.registry.memory import MemoryRegistry
from fleetlet.registry.model import (
    DESIRED_STATES,
    LEADER_KEY,
    SCHEDULE_PREFIX,
    UNITS_PREFIX,
    Change,
    DesiredState,
    LeaderRecord,
    ScheduleEntry,
    ScheduleView,
    UnitPage,
    UnitRecord,
    schedule_key,
    schedule_prefix,
    unit_key,
)
from fleetlet.registry.protocol import Registry
from fleetlet.registry.sqlite import SqliteRegistry

__all__ = [
    "DESIRED_STATES",
    "LEADER_KEY",
    "SCHEDULE_PREFIX",
    "UNITS_PREFIX",
    "Change",
    "DesiredState",
    "LeaderRecord",
    "LeadershipLost",
    "MemoryRegistry",
    "Registry",
    "RegistryAuthError",
    "RegistryClosed",
    "RegistryConflict",
    "RegistryError",
    "RevisionCompacted",
    "ScheduleEntry",
    "ScheduleView",
    "SqliteRegistry",
    "UnitNotFound",
    "UnitPage",
    "UnitRecord",
    "schedule_key",
    "schedule_prefix",
    "unit_key",
]
