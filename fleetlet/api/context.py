"""What the API's handlers share: the registry they read and write, and how they page through it."""

from __future__ import annotations

from dataclasses import dataclass

from fleetlet.registry.protocol import Registry

# fleet served pages of 100 units, and its clients follow nextPageToken until it is absent.
PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class ApiContext:
    registry: Registry
    page_size: int = PAGE_SIZE
