"""The etcd registry's token keeping, without etcd: one authentication for many refused calls, none while fresh."""

from __future__ import annotations

import anyio
import pytest

from fleetlet.registry.errors import RegistryAuthError
from fleetlet.registry.etcd_auth import Tokens, refuses_token, watch_refusal


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_calls_refused_together_authenticate_once() -> None:
    issued: list[str] = []
    gate = anyio.Event()

    async def authenticate(user: str, password: str) -> str:
        assert (user, password) == ("agent", "secret")
        await gate.wait()  # every caller is waiting before the first authentication ends
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1]

    tokens = Tokens("agent", "secret", authenticate)
    gate.set()
    epoch, token = await tokens.current()
    assert (epoch, token) == (1, "token-1")
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(tokens.renew, epoch)  # five calls refused with token-1
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert await tokens.current() == (2, "token-2")
    assert issued == ["token-1", "token-2"]


@pytest.mark.anyio
async def test_a_refused_user_is_asked_again_at_the_next_call() -> None:
    attempts = 0

    async def authenticate(user: str, password: str) -> str:
        nonlocal attempts
        attempts += 1
        raise RegistryAuthError("http://etcd:2379", user, "authentication failed")

    tokens = Tokens("agent", "wrong", authenticate)
    for _ in range(2):
        with pytest.raises(RegistryAuthError, match="refused user 'agent': authentication failed"):
            await tokens.current()
    assert attempts == 2


@pytest.mark.anyio
async def test_authentication_off_means_no_token() -> None:
    async def authenticate(user: str, password: str) -> None:
        return None

    assert await Tokens("agent", "secret", authenticate).current() == (1, None)


def test_what_counts_as_a_refused_token() -> None:
    assert refuses_token(16, "etcdserver: invalid auth token")
    assert refuses_token(3, "etcdserver: user name is empty")
    assert not refuses_token(3, "etcdserver: authentication failed, invalid user ID or password")
    assert not refuses_token(7, "etcdserver: permission denied")
    cancelled = {
        "canceled": True,
        "cancel_reason": "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
    }
    assert watch_refusal(cancelled) == cancelled["cancel_reason"]
    assert watch_refusal({"canceled": True, "cancel_reason": "etcdserver: permission denied"}) is None
    assert watch_refusal({"created": True}) is None
