"""etcd's user/password authentication, as the gateway speaks it: a token per registry, renewed when refused.

``POST /v3/auth/authenticate {"name", "password"}`` answers a token, which every call then carries in its
``Authorization`` header. etcd 3.4's simple tokens expire (``--auth-token-ttl``, 300 s by default, counted from
their last use) and are dropped when authentication is disabled, or a user's password changes; a token issued by
one member is good on every member of its cluster (the authentication goes through raft), so failing over keeps it.

A call refused for its token ("invalid auth token", gRPC code 16 UNAUTHENTICATED; or "user name is empty", when
authentication was enabled after we found it off) was refused before anything was applied: the gateway
authenticates again, once, and repeats the call. A watch is refused differently: etcd creates it and cancels it at
once, with the refusal as the ``cancel_reason``.

The password and the tokens are never logged, nor put into an error's message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from fleetlet.registry.errors import RegistryAuthError, RegistryError

log = logging.getLogger(__name__)

_UNAUTHENTICATED = 16  # gRPC status code
_INVALID_TOKEN = "invalid auth token"
_NO_USER = "user name is empty"  # a call without a token on a cluster with authentication enabled
_AUTH_NOT_ENABLED = "authentication is not enabled"
_AUTH_FAILED = "authentication failed"


class TokenRefused(RegistryError):
    """etcd refused a call for its token (expired, invalidated, or none): nothing was applied, so it may be retried."""

    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        self.message = message
        super().__init__(f"etcd at {endpoint} refused the call's token: {message}")


def refuses_token(code: object, message: str) -> bool:
    """Whether an error answer (gRPC ``code``, ``message``) is a refusal of the call's token."""
    return code == _UNAUTHENTICATED or _INVALID_TOKEN in message or _NO_USER in message


def watch_refusal(result: dict[str, Any]) -> str | None:
    """The refusal of a watch's token, if this streamed message is one: a watch cancelled as soon as created."""
    if not result.get("canceled"):
        return None
    reason = str(result.get("cancel_reason", ""))
    return reason if _INVALID_TOKEN in reason or _NO_USER in reason else None


def not_enabled(message: str) -> bool:
    """Whether an authentication was refused because the cluster has authentication off (then no token is needed)."""
    return _AUTH_NOT_ENABLED in message


def user_refused(endpoint: str, user: str, message: str) -> RegistryAuthError:
    """The error for an authentication etcd refused: a wrong password or an unknown user, in etcd's own words."""
    reason = "authentication failed" if _AUTH_FAILED in message else message.removeprefix("etcdserver: ")
    return RegistryAuthError(endpoint, user, reason)


class Tokens:
    """The registry's current token for ``user``, renewed through ``authenticate`` when etcd refuses it.

    ``authenticate(user, password)`` answers a token, or None when the cluster has authentication off. Each token
    has an epoch: a call refused with the token of epoch N asks for a renewal of epoch N, so that many calls
    refused at once authenticate once, not once each.
    """

    def __init__(self, user: str, password: str, authenticate: Callable[[str, str], Awaitable[str | None]]) -> None:
        if not user:
            raise ValueError("etcd authentication needs a user name")
        self.user = user
        self._password = password
        self._authenticate = authenticate
        self._token: str | None = None
        self._epoch = 0  # 0: not authenticated yet
        self._lock = anyio.Lock()

    async def current(self) -> tuple[int, str | None]:
        """The token to send (None: authentication is off) and its epoch; authenticates on first use."""
        if self._epoch == 0:
            await self.renew(0)
        return self._epoch, self._token

    async def renew(self, epoch: int) -> None:
        """Authenticate again, unless another call already replaced the token of ``epoch``."""
        async with self._lock:
            if self._epoch != epoch:
                return
            self._token = await self._authenticate(self.user, self._password)
            self._epoch += 1
            if self._token is None:
                log.info("etcd has authentication off: calls go without a token for user %r", self.user)
            elif epoch:
                log.info("etcd token renewed for user %r", self.user)
