"""fleet's v1 HTTP API over the registry, as an aiohttp application: :func:`fleet_v1_app`."""

from fleetlet.api.app import MAX_BODY_BYTES, PREFIXES, fleet_v1_app
from fleetlet.api.errors import APIError
from fleetlet.api.view import NodeView, StaticView, UnitState, UnknownMachine

__all__ = [
    "MAX_BODY_BYTES",
    "PREFIXES",
    "APIError",
    "NodeView",
    "StaticView",
    "UnitState",
    "UnknownMachine",
    "fleet_v1_app",
]
