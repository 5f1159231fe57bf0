"""The etcd registry over TLS (``https://``, client certificates) and with etcd's user/password authentication, on
real etcd members; and the registry contract on a member with both.

Certificates come from a throwaway CA made once per session; every member a test starts is killed at teardown.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.registry import Change, RegistryAuthError, unit_key
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.etcd import EtcdRegistry
from tests.integration.etcd_pki import Pki, make_pki
from tests.integration.etcd_rig import EtcdMember, drop_tokens, enable_auth, etcd_binary, etcd_cluster
from tests.registry_contract import GUARD, RegistryContract, RegistryFactory, receive, unit

pytestmark = pytest.mark.integration

ROOT_PASSWORD = "root-secret"
USER, PASSWORD = "agent", "agent-secret"


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    root = Path(tempfile.mkdtemp(prefix="fleetlet-pki-"))
    try:
        yield make_pki(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _started(members: list[EtcdMember], member: EtcdMember) -> EtcdMember:
    members.append(member)  # before it starts: a failed start is killed too
    await member.start()
    return member


# --- TLS ---------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_registry_works_over_tls_with_the_clusters_ca(pki: Pki, etcd_members: list[EtcdMember]) -> None:
    member = await _started(etcd_members, EtcdMember(etcd_binary(), pki=pki))
    assert member.url.startswith("https://")
    async with EtcdRegistry(member.url, ca_file=pki.ca) as registry:
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            assert await registry.put_unit("a.service", unit()) == 1
            (put,) = await receive(changes, 1)
            assert (put.kind, put.key, put.revision) == ("put", unit_key("a.service"), 1)
            tg.cancel_scope.cancel()
        record = await registry.get_unit("a.service")
        assert record is not None
        assert record.revision == 1
        term = await registry.campaign("m1", ttl=10)
        assert term is not None
        assert await registry.leader() == term


@pytest.mark.anyio
async def test_a_client_without_the_ca_is_refused_clearly(pki: Pki, etcd_members: list[EtcdMember]) -> None:
    member = await _started(etcd_members, EtcdMember(etcd_binary(), pki=pki))
    with anyio.fail_after(GUARD):
        async with EtcdRegistry(member.url) as registry:  # the system's trust store: not the test CA
            with pytest.raises(RegistryUnavailable) as caught:
                await registry.get_unit("a.service")
    message = str(caught.value)
    assert member.url in message
    assert "etcd's certificate is not trusted" in message
    assert "CA file" in message


@pytest.mark.anyio
async def test_client_cert_auth_refuses_a_client_without_a_certificate(
    pki: Pki, etcd_members: list[EtcdMember]
) -> None:
    member = await _started(etcd_members, EtcdMember(etcd_binary(), pki=pki, client_cert_auth=True))
    with anyio.fail_after(GUARD):
        async with EtcdRegistry(member.url, ca_file=pki.ca) as registry:
            with pytest.raises(RegistryUnavailable) as caught:
                await registry.put_unit("a.service", unit())
    assert member.url in str(caught.value)
    assert "etcd refused the client certificate" in str(caught.value)
    async with EtcdRegistry(member.url, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key) as registry:
        assert await registry.put_unit("a.service", unit()) == 1  # nothing was written by the refused call


def test_tls_files_that_cannot_be_used_are_value_errors_naming_them(pki: Pki, tmp_path: Path) -> None:
    url = "https://127.0.0.1:1"
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=f"CA file {missing} cannot be read"):
        EtcdRegistry(url, ca_file=missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"CA file {garbage} holds no usable certificate"):
        EtcdRegistry(url, ca_file=garbage)
    with pytest.raises(ValueError, match=f"key file {missing} cannot be read"):
        EtcdRegistry(url, cert_file=pki.client_cert, key_file=missing)
    with pytest.raises(ValueError, match="no client certificate and matching key"):
        EtcdRegistry(url, cert_file=pki.client_cert, key_file=pki.server_key)  # another certificate's key
    with pytest.raises(ValueError, match="needs its certificate file"):
        EtcdRegistry(url, key_file=pki.client_key)
    with pytest.raises(ValueError, match="no endpoint is https"):
        EtcdRegistry("http://127.0.0.1:1", ca_file=pki.ca)  # TLS meant, and not to be had
    with pytest.raises(ValueError, match="both a user name and a password"):
        EtcdRegistry(url, username="agent")


# --- authentication ----------------------------------------------------------------------------------------------


@pytest.fixture
async def auth_member(etcd_members: list[EtcdMember]) -> EtcdMember:
    """A plain-http member with authentication on: root, and USER with read and write on /fleetlet/."""
    member = await _started(etcd_members, EtcdMember(etcd_binary()))
    await enable_auth(member, ROOT_PASSWORD, {USER: PASSWORD})
    return member


@pytest.mark.anyio
async def test_the_right_password_works_including_a_watch(auth_member: EtcdMember) -> None:
    async with EtcdRegistry(auth_member.url, username=USER, password=PASSWORD) as registry:
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            await registry.put_unit("a.service", unit())
            await registry.set_machine("a.service", "m1")
            assert [(c.revision, c.key) for c in await receive(changes, 2)] == [
                (1, unit_key("a.service")),
                (2, "schedule/m1/a.service"),
            ]
            tg.cancel_scope.cancel()
        term = await registry.campaign("m1", ttl=10)
        assert term is not None
        await registry.resign(term)


@pytest.mark.anyio
async def test_a_wrong_password_is_a_registry_auth_error(auth_member: EtcdMember) -> None:
    async with EtcdRegistry(auth_member.url, username=USER, password="wrong") as registry:
        with pytest.raises(RegistryAuthError) as caught:
            await registry.get_unit("a.service")
    assert str(caught.value) == f"etcd at {auth_member.url} refused user 'agent': authentication failed"
    assert "wrong" not in str(caught.value)


@pytest.mark.anyio
async def test_no_credentials_on_a_cluster_with_authentication_is_a_registry_auth_error(
    auth_member: EtcdMember,
) -> None:
    async with EtcdRegistry(auth_member.url) as registry:
        with pytest.raises(
            RegistryAuthError, match="without a user name: authentication is on; give the registry a user name"
        ):
            await registry.put_unit("a.service", unit())
        send, unused = anyio.create_memory_object_stream[Change](10)
        with unused, pytest.raises(RegistryAuthError), anyio.fail_after(GUARD):
            await registry.watch(0, send)


@pytest.mark.anyio
async def test_calls_and_watches_go_on_after_etcd_drops_every_token(
    auth_member: EtcdMember, caplog: pytest.LogCaptureFixture
) -> None:
    """Authentication off and on again drops every token etcd issued (as their TTL running out would): the next
    call is refused for its token, and the registry authenticates again and repeats it, once."""
    caplog.set_level(logging.INFO, logger="fleetlet.registry.etcd_auth")
    # history=None: a new watch opens its stream first thing, so the stream itself meets the dropped token.
    async with EtcdRegistry(auth_member.url, username=USER, password=PASSWORD, history=None) as registry:
        await registry.put_unit("a.service", unit())
        send, changes = anyio.create_memory_object_stream[Change](10)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            await receive(changes, 1)
            await drop_tokens(auth_member, ROOT_PASSWORD)
            assert await registry.put_unit("b.service", unit()) == 2  # auth changes are no key writes
            (after,) = await receive(changes, 1)
            assert after.key == unit_key("b.service")
            tg.cancel_scope.cancel()
        # A new watch, after another drop: its stream is refused at creation, then opened with a new token.
        await drop_tokens(auth_member, ROOT_PASSWORD)
        send, changes = anyio.create_memory_object_stream[Change](10)
        with changes:
            async with anyio.create_task_group() as tg:
                tg.start_soon(registry.watch, 2, send)
                await registry.delete_unit("a.service")
                (deleted,) = await receive(changes, 1)
                assert (deleted.kind, deleted.key) == ("delete", unit_key("a.service"))
                tg.cancel_scope.cancel()
    # Once per drop: the calls refused together (the watch's stream, the delete) authenticated once.
    assert caplog.text.count("etcd token renewed for user 'agent'") == 2
    assert PASSWORD not in caplog.text


@pytest.mark.anyio
async def test_a_token_from_one_member_serves_on_another_after_failover(
    etcd_members: list[EtcdMember], caplog: pytest.LogCaptureFixture
) -> None:
    members = await etcd_cluster(etcd_binary(), 3, etcd_members)
    await enable_auth(members[0], ROOT_PASSWORD, {USER: PASSWORD})
    urls = [m.url for m in members]
    caplog.set_level(logging.INFO, logger="fleetlet.registry.etcd_auth")
    async with EtcdRegistry(urls, username=USER, password=PASSWORD, timeout=2) as registry:
        await registry.put_unit("a.service", unit())  # authenticated at members[0]
        members[0].stop()
        with anyio.fail_after(GUARD):
            while True:  # the cluster may be electing a leader, if the stopped member led
                try:
                    await registry.put_unit("b.service", unit())
                    break
                except RegistryUnavailable:
                    await anyio.sleep(0.1)
        assert [u.name for u in (await registry.list_units()).units] == ["a.service", "b.service"]
    assert "etcd token renewed" not in caplog.text  # the first token served on the other members


# --- the contract, over TLS with client certificates and authentication ------------------------------------------


class SecureSpawnedEtcdRegistry(EtcdRegistry):
    """An EtcdRegistry, as USER, on a TLS member requiring client certificates and authentication, which entering
    starts and closing kills."""

    def __init__(self, member: EtcdMember, pki: Pki, clock: ManualClock, history: int) -> None:
        super().__init__(
            member.url,
            clock=clock,
            history=history,
            ca_file=pki.ca,
            cert_file=pki.client_cert,
            key_file=pki.client_key,
            username=USER,
            password=PASSWORD,
        )
        self.member = member

    async def __aenter__(self) -> Self:
        await self.member.start()
        await enable_auth(self.member, ROOT_PASSWORD, {USER: PASSWORD})
        return await super().__aenter__()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # the contract's closing test awaits this in a cancelled task group
            try:
                await super().aclose()
            finally:
                self.member.kill()


@pytest.fixture
def registry_factory(pki: Pki, etcd_members: list[EtcdMember]) -> RegistryFactory:
    binary = etcd_binary()

    def make(clock: ManualClock, history: int) -> SecureSpawnedEtcdRegistry:
        member = EtcdMember(binary, pki=pki, client_cert_auth=True)
        etcd_members.append(member)
        return SecureSpawnedEtcdRegistry(member, pki, clock, history)

    return make


class TestSecureEtcdRegistry(RegistryContract):
    pass
