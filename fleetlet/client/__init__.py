"""The async client of fleet's v1 API: ``async with Client(endpoint) as fleet:``.

One concept per module: :mod:`.errors` (the :class:`ClientError` tree), :mod:`.records` (what the API returns,
and its decoding), :mod:`.transport` (the endpoint, the session, mapping failures), :mod:`.events` (the resuming
event stream), :mod:`.waiting` and :mod:`.poll` (waiting until units get where they were sent),
:mod:`.explanation` (where a unit is and why), and :mod:`.client` (the :class:`Client`, one method an operation).
"""

from fleetlet.client.client import JOURNAL_LINES, Client
from fleetlet.client.errors import (
    APIRequestFailed,
    ClientError,
    EndpointUnreachable,
    EventsLost,
    InvalidEndpoint,
    InvalidUnit,
    MachineNotFound,
    UnexpectedResponse,
    UnitConflict,
    UnitFailed,
    UnitGone,
    UnitNotFound,
    UnitUnplaceable,
    WaitFailed,
    WaitTimedOut,
)
from fleetlet.client.events import EVENTS_SILENCE, RECONNECT_FIRST, RECONNECT_FOR, RECONNECT_MAX
from fleetlet.client.explanation import Explanation, Placement
from fleetlet.client.records import (
    Event,
    Machine,
    MetadataOp,
    MetadataOpKind,
    Unit,
    UnitReport,
    UnitState,
    metadata_ops,
)
from fleetlet.client.transport import API_PREFIX, DEFAULT_TIMEOUT, OWN_PREFIX
from fleetlet.client.waiting import POLL_INTERVAL, Goal, UnitProgress

__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT",
    "EVENTS_SILENCE",
    "JOURNAL_LINES",
    "OWN_PREFIX",
    "POLL_INTERVAL",
    "RECONNECT_FIRST",
    "RECONNECT_FOR",
    "RECONNECT_MAX",
    "APIRequestFailed",
    "Client",
    "ClientError",
    "EndpointUnreachable",
    "Event",
    "EventsLost",
    "Explanation",
    "Goal",
    "InvalidEndpoint",
    "InvalidUnit",
    "Machine",
    "MachineNotFound",
    "MetadataOp",
    "MetadataOpKind",
    "Placement",
    "UnexpectedResponse",
    "Unit",
    "UnitConflict",
    "UnitFailed",
    "UnitGone",
    "UnitNotFound",
    "UnitProgress",
    "UnitReport",
    "UnitState",
    "UnitUnplaceable",
    "WaitFailed",
    "WaitTimedOut",
    "metadata_ops",
]
