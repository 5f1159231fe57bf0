"""What the API's handlers share: the registry they read and write, the view of the machines, and the clock."""

from __future__ import annotations

from dataclasses import dataclass

from fleetlet.api.view import NodeView
from fleetlet.clock import Clock
from fleetlet.registry.protocol import Registry

# fleet served pages of 100 units, and its clients follow nextPageToken until it is absent.
PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class ApiContext:
    registry: Registry
    view: NodeView
    clock: Clock
    page_size: int = PAGE_SIZE
