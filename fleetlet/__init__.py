"""fleetlet: a cluster init system for containers — CoreOS fleet's model, rebuilt in asyncio Python.

The public API is what ``__all__`` lists; everything else is internal and may change. The embedded node
(:class:`Agent` and its configuration) is imported on first use: a program that only talks to an agent, as the CLI
does, need not load the agent's registry, engine and API server.
"""

import importlib
import typing

from fleetlet.client import (
    APIRequestFailed,
    Client,
    ClientError,
    EndpointUnreachable,
    Event,
    EventsLost,
    Explanation,
    InvalidEndpoint,
    InvalidUnit,
    Machine,
    MachineNotFound,
    MetadataOp,
    UnexpectedResponse,
    Unit,
    UnitConflict,
    UnitFailed,
    UnitGone,
    UnitNotFound,
    UnitProgress,
    UnitReport,
    UnitState,
    UnitUnplaceable,
    WaitFailed,
    WaitTimedOut,
)
from fleetlet.diagnostics import Diagnostic, Report
from fleetlet.errors import FleetletError, UnitFileError, UnitNameError
from fleetlet.units.check import CheckedUnit, check_unit, load_unit
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import UnitName, name_from_argument, parse_name
from fleetlet.units.service import ServiceConfig
from fleetlet.units.syntax import parse
from fleetlet.units.xfleet import Requirements

if typing.TYPE_CHECKING:
    from fleetlet.agent.agent import Agent, AgentConfig, AgentStartupError

__version__ = "0.1.0"

# Public names imported on first use (PEP 562), from the module that defines each.
_LAZY = {
    "Agent": "fleetlet.agent.agent",
    "AgentConfig": "fleetlet.agent.agent",
    "AgentStartupError": "fleetlet.agent.agent",
}

__all__ = [
    "APIRequestFailed",
    "Agent",
    "AgentConfig",
    "AgentStartupError",
    "CheckedUnit",
    "Client",
    "ClientError",
    "Diagnostic",
    "EndpointUnreachable",
    "Event",
    "EventsLost",
    "Explanation",
    "FleetletError",
    "InvalidEndpoint",
    "InvalidUnit",
    "Machine",
    "MachineNotFound",
    "MetadataOp",
    "Report",
    "Requirements",
    "ServiceConfig",
    "UnexpectedResponse",
    "Unit",
    "UnitConflict",
    "UnitFailed",
    "UnitFile",
    "UnitFileError",
    "UnitGone",
    "UnitName",
    "UnitNameError",
    "UnitNotFound",
    "UnitOption",
    "UnitProgress",
    "UnitReport",
    "UnitState",
    "UnitUnplaceable",
    "WaitFailed",
    "WaitTimedOut",
    "__version__",
    "check_unit",
    "load_unit",
    "name_from_argument",
    "parse",
    "parse_name",
]


# At run time only: to a type checker every name of the package is spelled out above, and a typo stays an error.
if not typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once: later lookups do not come here
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
