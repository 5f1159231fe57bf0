"""The registry contract on MemoryRegistry."""

from __future__ import annotations

import pytest

from fleetlet.clock import ManualClock
from fleetlet.registry import MemoryRegistry, Registry
from tests.registry_contract import RegistryContract, RegistryFactory


@pytest.fixture
def registry_factory() -> RegistryFactory:
    def make(clock: ManualClock, history: int) -> MemoryRegistry:
        return MemoryRegistry(clock, history=history)

    return make


class TestMemoryRegistry(RegistryContract):
    pass


def test_memory_registry_is_a_registry() -> None:
    """Checked by mypy: the class satisfies the Registry protocol."""
    registry: Registry = MemoryRegistry(ManualClock())
    assert registry is not None
