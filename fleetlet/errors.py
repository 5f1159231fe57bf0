"""The exceptions fleetlet raises.

Every error fleetlet raises on purpose derives from :class:`FleetletError`, so callers embedding fleetlet can
catch one type. The tree grows with the packages that need it::

    FleetletError
    ├── UnitFileError          a unit file or unit name is invalid; carries every problem found, with file:line
    │   └── UnitNameError      the name alone is invalid (no file to point into)
    ├── RuntimeFailure         the container engine refused or failed a request (fleetlet.exec.runtime), .status
    │   ├── EngineUnavailable  no answer at all: not running, restarting, socket gone
    │   ├── NoSuchContainer    .container
    │   ├── NoSuchImage        .image
    │   └── NameConflict       .name
    ├── SpawnFailed            a command could not be started (fleetlet.exec.subprocess_runner), .exit_status
    ├── RegistryError          desired state could not be read or written (fleetlet.registry.errors)
    │   ├── RegistryConflict   a conditional write lost (.key, .expected, .actual); LeadershipLost below it
    │   ├── RevisionCompacted  a watch asked for history no longer kept: re-read
    │   ├── UnitNotFound
    │   ├── RegistryClosed
    │   ├── RegistryUnavailable
    │   └── RegistryAuthError  etcd refused the registry's user/password
    ├── APIError               an API request refused, with its HTTP .status (fleetlet.api.errors)
    ├── ClientError            a client call failed (fleetlet.client: unreachable, refused, not found, conflict)
    ├── AgentStartupError      an agent cannot start: one line saying why (fleetlet.agent.agent)
    └── ConfigError            the agent's settings are invalid (fleetlet.agent.config)

Third-party errors (aiohttp, aiodocker) are mapped to these at the boundary where they occur
(``fleetlet.exec.docker_runtime.engine_errors``). Each package's errors live beside the code that raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetlet.diagnostics import Diagnostic


class FleetletError(Exception):
    """Base of every error fleetlet raises on purpose."""


class UnitFileError(FleetletError):
    """A unit file cannot be used. ``diagnostics`` holds every error found, in file order."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        if not diagnostics:
            raise ValueError("UnitFileError needs at least one diagnostic")
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def file(self) -> str:
        return self.diagnostics[0].file

    @property
    def line(self) -> int:
        return self.diagnostics[0].line


class UnitNameError(UnitFileError):
    """A unit name breaks fleet's naming rules."""

    def __init__(self, name: str, reason: str) -> None:
        from fleetlet.diagnostics import Diagnostic  # the diagnostics module imports this one

        self.name = name
        self.reason = reason
        super().__init__([Diagnostic(file=name or "''", line=0, message=f"invalid unit name: {reason}")])

    def __str__(self) -> str:
        return f"invalid unit name {self.name!r}: {self.reason}"


def sole(exc: BaseException, kinds: type[Exception] | tuple[type[Exception], ...]) -> Exception | None:
    """The exception of ``kinds`` that ``exc`` is, or the first of a (task) group that holds nothing else; None
    otherwise. How a caller tells "only the expected failure happened" through anyio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(kinds)
        return sole(matched.exceptions[0], kinds) if matched is not None and rest is None else None
    return exc if isinstance(exc, kinds) else None
