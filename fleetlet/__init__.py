"""fleetlet: a cluster init system for containers — CoreOS fleet's model, rebuilt in asyncio Python.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from fleetlet.client import (
    APIRequestFailed,
    Client,
    ClientError,
    EndpointUnreachable,
    MachineNotFound,
    MetadataOp,
    UnitReport,
)
from fleetlet.diagnostics import Diagnostic, Report
from fleetlet.errors import FleetletError, UnitFileError, UnitNameError
from fleetlet.units.check import CheckedUnit, check_unit, load_unit
from fleetlet.units.model import UnitFile, UnitOption
from fleetlet.units.names import UnitName, name_from_argument, parse_name
from fleetlet.units.service import ServiceConfig
from fleetlet.units.syntax import parse
from fleetlet.units.xfleet import Requirements

__version__ = "0.1.0"

__all__ = [
    "APIRequestFailed",
    "CheckedUnit",
    "Client",
    "ClientError",
    "Diagnostic",
    "EndpointUnreachable",
    "FleetletError",
    "MachineNotFound",
    "MetadataOp",
    "Report",
    "Requirements",
    "ServiceConfig",
    "UnitFile",
    "UnitFileError",
    "UnitName",
    "UnitNameError",
    "UnitOption",
    "UnitReport",
    "__version__",
    "check_unit",
    "load_unit",
    "name_from_argument",
    "parse",
    "parse_name",
]
