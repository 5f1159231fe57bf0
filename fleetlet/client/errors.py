"""The errors of :mod:`fleetlet.client`: every failure of a client call is a :class:`ClientError`.

aiohttp's exceptions are mapped where requests are made (:func:`fleetlet.client.transport.request_errors`) and
never escape. The tree extends the one drawn in :mod:`fleetlet.errors`::

    FleetletError
    └── ClientError               a client call failed
        ├── InvalidEndpoint       the endpoint is not http://, https:// or unix:// (.endpoint)
        ├── EndpointUnreachable   no answer: refused, socket missing, timed out, connection lost (.endpoint)
        ├── UnexpectedResponse    an answer that is not fleet's API (.endpoint, .status)
        ├── APIRequestFailed      the API refused the request: its .status and .message
        │   ├── UnitNotFound      the unit named does not exist (.name); status 404, or 409 for a state change
        │   └── InvalidUnit       the API refused a unit file (.name, .line of its first problem)
        ├── UnitConflict          submit: the unit exists with other contents (.name)
        ├── MachineNotFound       set_metadata: the cluster has no such machine (.machine_id)
        ├── EventsLost            events: the stream no longer has the events after .index
        ├── WaitFailed            a unit waited for cannot get there (.name, .progress: where it was)
        │   ├── UnitFailed        it failed on its machine (.machine, .active, .sub, .result)
        │   ├── UnitUnplaceable   no machine can take it (.reasons)
        │   └── UnitGone          it was destroyed meanwhile
        └── WaitTimedOut          units still on their way when the wait's bound ran out (.names, .units)

UnitNotFound and InvalidUnit extend APIRequestFailed, so callers that caught that and read ``.status`` still work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from fleetlet.errors import FleetletError

if TYPE_CHECKING:
    from fleetlet.client.waiting import UnitProgress

# "hello.service:12: Restart=: invalid value ...": the file:line a unit check puts before its message.
_FILE_LINE: Final = re.compile(r"^[^\s:]+:(\d+): ")


class ClientError(FleetletError):
    """A client call failed; the message is one line fit for a terminal."""


class InvalidEndpoint(ClientError):
    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"invalid endpoint {endpoint!r}: {reason}")


class EndpointUnreachable(ClientError):
    """No answer from the endpoint: nothing listens, the socket is missing, the request timed out or was cut."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"cannot reach the fleet API at {endpoint}: {reason}")


class UnexpectedResponse(ClientError):
    """An answer that fleet's API would not give: the endpoint is probably some other server."""

    def __init__(self, endpoint: str, status: int, reason: str) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(f"unexpected answer from {endpoint} (HTTP {status}): {reason}")


class APIRequestFailed(ClientError):
    """The API refused the request with fleet's error body: HTTP ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})")


class UnitNotFound(APIRequestFailed):
    """The unit ``name`` does not exist; ``status`` and ``message`` are the server's answer."""

    def __init__(self, name: str, status: int = 404, message: str = "unit does not exist") -> None:
        self.name = name
        super().__init__(status, message)


class InvalidUnit(APIRequestFailed):
    """The API refused the unit file ``name``: ``message`` holds every problem as ``FILE:LINE: message``, one a
    line; ``line`` is the first one's (None when the problem is not at a line, as a bad name is not)."""

    def __init__(self, name: str, status: int, message: str) -> None:
        self.name = name
        match = _FILE_LINE.match(message)
        self.line: int | None = int(match.group(1)) if match else None
        super().__init__(status, message)


class UnitConflict(ClientError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unit {name} already exists with different contents")


class MachineNotFound(ClientError):
    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        super().__init__(f"machine {machine_id} not found")


class EventsLost(ClientError):
    """The event stream no longer keeps the events after ``index``: list the cluster again, then watch."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"the events after index {index} are no longer kept: start again without an index")


class WaitFailed(ClientError):
    """A unit waited for cannot get where it was sent; ``progress`` is how the last poll saw it."""

    def __init__(self, progress: UnitProgress, message: str) -> None:
        self.name = progress.name
        self.progress = progress
        super().__init__(message)


class UnitFailed(WaitFailed):
    """The unit failed on its machine (``machine``: fleetctl's ``1a2b3c4d.../10.0.0.5``) after it was started."""

    def __init__(self, progress: UnitProgress) -> None:
        self.machine = progress.machine
        self.active = progress.active
        self.sub = progress.sub
        self.result = progress.result
        result = f" ({progress.result})" if progress.result else ""
        super().__init__(
            progress, f"Unit {progress.name} failed on {progress.machine}: {progress.active}/{progress.sub}{result}"
        )


class UnitUnplaceable(WaitFailed):
    """No machine can take the unit: ``reasons`` says why, one reason per machine."""

    def __init__(self, progress: UnitProgress) -> None:
        self.reasons = progress.reasons
        super().__init__(progress, f"Unit {progress.name} cannot be placed: {'; '.join(progress.reasons)}")


class UnitGone(WaitFailed):
    """The unit was destroyed while it was waited for."""

    def __init__(self, progress: UnitProgress) -> None:
        super().__init__(progress, f"Unit {progress.name} no longer exists")


class WaitTimedOut(ClientError):
    """The wait's bound ran out with ``units`` still on their way, as the last poll saw them."""

    def __init__(self, goal: str, units: Sequence[UnitProgress]) -> None:
        self.goal = goal
        self.units = tuple(units)
        self.names = tuple(unit.name for unit in units)
        super().__init__(f"not {goal} in time: {', '.join(self.names)}")
