"""The public API is exactly what fleetlet.__all__ lists, and every listed name exists."""

from __future__ import annotations

import types

import fleetlet


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(fleetlet).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(fleetlet.__all__)
    assert len(set(fleetlet.__all__)) == len(fleetlet.__all__)


def test_every_exported_name_resolves() -> None:
    for name in fleetlet.__all__:
        assert getattr(fleetlet, name) is not None


def test_public_exceptions_derive_from_fleetlet_error() -> None:
    assert issubclass(fleetlet.UnitFileError, fleetlet.FleetletError)
    assert issubclass(fleetlet.UnitNameError, fleetlet.UnitFileError)
