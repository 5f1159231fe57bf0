"""The registry's errors.

They extend the tree drawn in :mod:`fleetlet.errors`::

    FleetletError
    └── RegistryError            the registry refused or failed a request
        ├── RegistryConflict     a conditional write found another revision: .key, .expected, .actual
        │   └── LeadershipLost   a renew or resign by a machine that no longer holds the leader record
        ├── RevisionCompacted    a watch asked for changes older than the kept history: .requested, .compacted
        ├── UnitNotFound         .unit
        ├── RegistryClosed       the registry was closed
        ├── RegistryUnavailable  the remote registry cannot be reached: .url, .reason
        └── RegistryAuthError    etcd refused the registry's user (wrong password, no such user): .url, .user

They live beside the port that raises them, as the runtime's errors do.
"""

from __future__ import annotations

from fleetlet.errors import FleetletError


class RegistryError(FleetletError):
    """Base of the registry's errors."""


class RegistryConflict(RegistryError):
    """A conditional write lost: the key's mod revision is ``actual``, not ``expected`` (0: absent).

    This is what a deposed leader's stale decision hits: the caller re-reads and decides again, or gives up.
    """

    def __init__(self, key: str, expected: int, actual: int, message: str | None = None) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(message or f"{key}: expected revision {expected}, found {actual}")


class LeadershipLost(RegistryConflict):
    """The leader record is no longer the caller's: expired, resigned, or taken by another machine."""


class RevisionCompacted(RegistryError):
    """Changes after ``requested`` are no longer kept (history starts after ``compacted``): re-read, then watch."""

    def __init__(self, requested: int, compacted: int) -> None:
        self.requested = requested
        self.compacted = compacted
        super().__init__(
            f"revision {requested} is compacted: the registry keeps changes after revision {compacted} only;"
            " re-read the state and watch from its revision"
        )


class UnitNotFound(RegistryError):
    """No unit of that name in the registry."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        super().__init__(f"unit {unit!r} not found")


class RegistryClosed(RegistryError):
    """The registry was closed; nothing more can be read or written through this object."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached (the server is down, or the network between): try again later.

    Only the remote backend raises it; its watches do not, they reconnect and resume by themselves.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"the cluster's registry at {url} cannot be reached: {reason}")


class RegistryAuthError(RegistryError):
    """etcd refused the user the registry authenticates as: a wrong password, an unknown user, or none given.

    Not :class:`RegistryUnavailable`: trying again later does not help, the settings must change.
    """

    def __init__(self, url: str, user: str | None, reason: str) -> None:
        self.url = url
        self.user = user
        who = f"user {user!r}" if user is not None else "a client without a user name"
        super().__init__(f"etcd at {url} refused {who}: {reason}")
