"""The public API is exactly what fleetlet.__all__ lists, and every listed name exists."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import fleetlet


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(fleetlet).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # The names imported on first use are public too, whether or not something used them yet.
    assert public | set(fleetlet._LAZY) | {"__version__"} == set(fleetlet.__all__)
    assert len(set(fleetlet.__all__)) == len(fleetlet.__all__)


def test_every_exported_name_resolves() -> None:
    for name in fleetlet.__all__:
        assert getattr(fleetlet, name) is not None


def test_the_embedded_node_is_exported_from_where_it_is_defined() -> None:
    from fleetlet.agent.agent import Agent, AgentConfig, AgentStartupError

    assert (fleetlet.Agent, fleetlet.AgentConfig, fleetlet.AgentStartupError) == (
        Agent,
        AgentConfig,
        AgentStartupError,
    )
    assert set(fleetlet._LAZY) <= set(dir(fleetlet))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        fleetlet.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_fleetlet_leaves_the_agent_unloaded() -> None:
    """A client-only program does not pay for the agent's registry, engine and API server."""
    code = "import sys, fleetlet; print('fleetlet.agent.agent' in sys.modules, 'aiohttp.web' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_public_exceptions_derive_from_fleetlet_error() -> None:
    assert issubclass(fleetlet.UnitFileError, fleetlet.FleetletError)
    assert issubclass(fleetlet.UnitNameError, fleetlet.UnitFileError)
    assert issubclass(fleetlet.AgentStartupError, fleetlet.FleetletError)
