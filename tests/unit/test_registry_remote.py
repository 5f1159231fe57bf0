"""The registry contract on RemoteRegistry: a MemoryRegistry served by the API's registry routes on loopback.

Real HTTP over real sockets: the codec, the error mapping, the streamed watch. What only the remote backend has
to keep (a watch that resumes across broken connections, the cluster key's token, a server that is gone) is below.
"""

from __future__ import annotations

import contextlib
from typing import Self

import anyio
import pytest
from aiohttp import web

from fleetlet.api import fleet_v1_app
from fleetlet.api.registry import RegistryService
from fleetlet.clock import ManualClock, SystemClock
from fleetlet.cluster.auth import registry_token
from fleetlet.registry import Change, MemoryRegistry, Registry, RegistryError, schedule_key, unit_key
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.remote import RemoteRegistry
from fleetlet.registry.watch import Position
from tests.registry_contract import GUARD, RegistryContract, RegistryFactory, receive, unit

KEY = b"0123456789abcdef-the-cluster-key"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ServedRegistry(RemoteRegistry):
    """A RemoteRegistry of a MemoryRegistry behind a real aiohttp server, which entering starts and closing stops."""

    def __init__(self, clock: ManualClock, history: int, *, key: bytes | None = None, token: str | None = None):
        super().__init__("http://unbound", token=token)
        self.backend = MemoryRegistry(clock, history=history)
        self._key = key
        self._stack = contextlib.AsyncExitStack()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self.backend)
        service = RegistryService(self.backend, lambda: self.url, self._key, SystemClock())
        self.runner = web.AppRunner(fleet_v1_app(self.backend, registry_service=service), handle_signals=False)
        await self.runner.setup()
        self._stack.push_async_callback(self.runner.cleanup)
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return await super().__aenter__()

    async def aclose(self) -> None:
        # Shielded: the contract's closing test awaits this in a task group that the ended watch cancels.
        with anyio.CancelScope(shield=True):
            await super().aclose()
            await self._stack.aclose()


@pytest.fixture
def registry_factory() -> RegistryFactory:
    return ServedRegistry


class TestRemoteRegistry(RegistryContract):
    pass


def test_remote_registry_is_a_registry() -> None:
    """Checked by mypy: the class satisfies the Registry protocol."""
    registry: Registry = RemoteRegistry("http://127.0.0.1:1")
    assert registry is not None


@pytest.mark.anyio
async def test_watch_resumes_across_a_broken_connection_without_loss_or_duplicate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server drops every watch connection (as a restart would): the receiver sees each change once."""
    served = ServedRegistry(ManualClock(), 1000)
    async with served as registry:
        backend = served.backend
        await backend.put_unit("a.service", unit())
        send, changes = anyio.create_memory_object_stream[Change](100)
        async with anyio.create_task_group() as tg, changes:
            tg.start_soon(registry.watch, 0, send)
            (first,) = await receive(changes, 1)
            assert first.key == unit_key("a.service")
            assert served.runner is not None
            await backend.set_machine("a.service", "m1")
            await backend.set_machine("a.service", "m2")  # a move: two changes at one revision
            moved = await receive(changes, 3)
            for connection in list(served.runner.server.connections):  # type: ignore[union-attr]
                connection.force_close()
            await backend.put_unit("b.service", unit())
            await backend.delete_unit("a.service")  # two changes: the unit and its schedule entry
            after = await receive(changes, 3)
            revisions = [c.revision for c in [first, *moved, *after]]
            assert revisions == [1, 2, 3, 3, 4, 5, 5]
            assert [c.key for c in after[1:]] == [unit_key("a.service"), schedule_key("m2", "a.service")]
            tg.cancel_scope.cancel()
    assert "registry watch broken" in caplog.text  # it did reconnect


@pytest.mark.anyio
async def test_the_cluster_key_token_is_required_when_the_server_has_a_key() -> None:
    async with ServedRegistry(ManualClock(), 100, key=KEY) as without:
        with pytest.raises(RegistryError, match="needs the cluster key"):
            await without.revision()
    async with ServedRegistry(ManualClock(), 100, key=KEY, token=registry_token(b"another key, wrong")) as wrong:
        with pytest.raises(RegistryError, match="needs the cluster key"):
            await wrong.put_unit("a.service", unit())
    async with ServedRegistry(ManualClock(), 100, key=KEY, token=registry_token(KEY)) as right:
        assert await right.put_unit("a.service", unit()) == 1


@pytest.mark.anyio
async def test_an_unreachable_server_is_registry_unavailable() -> None:
    with anyio.fail_after(GUARD):
        async with RemoteRegistry("http://127.0.0.1:9", timeout=2) as registry:
            with pytest.raises(RegistryUnavailable) as caught:
                await registry.get_unit("a.service")
    assert "127.0.0.1:9" in str(caught.value)
    assert caught.value.url == "http://127.0.0.1:9"


@pytest.mark.anyio
async def test_an_invalid_unit_text_is_a_clear_error() -> None:
    async with ServedRegistry(ManualClock(), 100) as registry:
        with pytest.raises(ValueError, match="must be one of"):
            await registry.set_desired_state("a.service", "running")  # type: ignore[arg-type]


def test_a_watch_broken_inside_a_write_resumes_before_it_and_skips_what_it_delivered() -> None:
    position = Position(4)
    assert (position.resume_after, position.delivered) == (4, 0)
    position.delivered_one(5)
    position.delivered_one(7)  # the first of write 7's changes, then the connection broke
    assert (position.resume_after, position.revision, position.delivered) == (5, 7, 1)
    position.delivered_one(7)
    position.delivered_one(8)
    assert (position.resume_after, position.revision, position.delivered) == (7, 8, 1)
