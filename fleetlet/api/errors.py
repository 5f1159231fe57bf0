"""The API's error: what a request did wrong, as an HTTP status and fleet's message.

It extends the tree drawn in :mod:`fleetlet.errors`::

    FleetletError
    └── APIError        a request the API refuses: .status, .message

Handlers raise it; the error middleware (:mod:`fleetlet.api.app`) renders it as fleet's
``{"error":{"code":N,"message":"..."}}`` body.
"""

from __future__ import annotations

from fleetlet.errors import FleetletError


class APIError(FleetletError):
    """A refused request: the HTTP ``status`` to answer and the ``message`` fleetctl prints."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")
