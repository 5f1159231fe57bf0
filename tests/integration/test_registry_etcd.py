"""The registry contract on EtcdRegistry, each registry on a real etcd member of its own; and what only etcd has.

Every ``registry_factory`` call starts a fresh single-member etcd (revisions from 1) that closing the registry
kills; the fixture kills whatever is left, so a failing test leaves no etcd behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Self

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.registry import Registry
from fleetlet.registry.etcd import EtcdRegistry
from tests.integration.etcd_rig import EtcdMember, etcd_binary
from tests.registry_contract import RegistryContract, RegistryFactory

pytestmark = pytest.mark.integration


class SpawnedEtcdRegistry(EtcdRegistry):
    """An EtcdRegistry on an etcd member that entering starts and closing kills."""

    def __init__(self, member: EtcdMember, clock: ManualClock, history: int) -> None:
        super().__init__(member.url, clock=clock, history=history)
        self.member = member

    async def __aenter__(self) -> Self:
        await self.member.start()
        return await super().__aenter__()

    async def aclose(self) -> None:
        # Shielded: the contract's closing test awaits this in a task group that the ended watch cancels.
        with anyio.CancelScope(shield=True):
            try:
                await super().aclose()
            finally:
                self.member.kill()


@pytest.fixture
def etcd_members() -> Iterator[list[EtcdMember]]:
    """Every member a test starts; killed at teardown, whatever happened."""
    members: list[EtcdMember] = []
    try:
        yield members
    finally:
        for member in members:
            member.kill()


@pytest.fixture
def registry_factory(etcd_members: list[EtcdMember]) -> RegistryFactory:
    binary = etcd_binary()

    def make(clock: ManualClock, history: int) -> SpawnedEtcdRegistry:
        member = EtcdMember(binary)
        etcd_members.append(member)
        return SpawnedEtcdRegistry(member, clock, history)

    return make


class TestEtcdRegistry(RegistryContract):
    pass


def test_etcd_registry_is_a_registry() -> None:
    """Checked by mypy: the class satisfies the Registry protocol (constructing it connects to nothing)."""
    registry: Registry = EtcdRegistry("http://127.0.0.1:1")
    assert registry is not None
