"""etcd v3's JSON gateway, as the etcd registry speaks it: one POST per call, keys and values in base64.

The gateway (grpc-gateway in front of etcd's gRPC API) takes and answers JSON: ``bytes`` fields are base64 and
64-bit integers are strings, both ways; fields at their zero value (``0``, ``false``, an empty list) are left out
of answers, so every reader here defaults them. Errors come back as ``{"error", "message", "code"}`` with a gRPC
status code.

Nothing here knows fleetlet's keys or records (:mod:`fleetlet.registry.etcd_layout` does): this module is the
wire, and maps its failures to the registry's errors at the boundary. A member that cannot be connected to (or
that refuses the TLS handshake) is skipped for the next one listed; a call that reached a member and then broke is
not retried, since a write may have been applied. A call refused for its authentication token is retried once with
a new token (:mod:`fleetlet.registry.etcd_auth`); TLS is :mod:`fleetlet.registry.etcd_tls`.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from fleetlet.registry.errors import RegistryAuthError, RegistryClosed, RegistryError, RegistryUnavailable
from fleetlet.registry.etcd_auth import TokenRefused, Tokens, not_enabled, refuses_token, user_refused, watch_refusal
from fleetlet.registry.etcd_tls import certificate_refused, client_context, handshake_refused

Json = dict[str, Any]
CALL_TIMEOUT = 10.0

# gRPC status codes that mean "this member cannot serve now" (no leader, timed out, shutting down), not "no".
_UNAVAILABLE_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_UNAVAILABLE_STATUS = {502, 503, 504}
_COMPACTED = "required revision has been compacted"


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix`` (etcd's clientv3 rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def number(fields: Json, name: str) -> int:
    """A 64-bit integer field: a string on the wire, absent when zero."""
    value = fields.get(name, 0)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"etcd answered {name}={value!r}, not an integer") from exc


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd holds it: ``mod_revision`` is etcd's revision of its last write."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def key_value(fields: Json) -> KeyValue:
    return KeyValue(
        unb64(fields.get("key", "")),
        unb64(fields.get("value", "")),
        number(fields, "create_revision"),
        number(fields, "mod_revision"),
        number(fields, "lease"),
    )


def header_revision(answer: Json) -> int:
    return number(answer.get("header", {}), "revision")


class CompactedError(RegistryError):
    """etcd no longer keeps the revision asked for; ``compact_revision`` is the oldest it does (0: not told)."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"etcd keeps revisions from {compact_revision} only")


class Refused(RegistryError):
    """etcd answered with an error: its gRPC ``code`` (None if it gave none) and ``message``."""

    def __init__(self, endpoint: str, code: object, message: str) -> None:
        self.endpoint = endpoint
        self.code = code
        self.message = message
        super().__init__(f"etcd refused the request: {message}")


class Gateway:
    """The JSON gateway of an etcd cluster, at any of ``endpoints`` (``http://`` or ``https://host:port``), tried
    in turn.

    TLS: ``ca_file`` is the CA to trust (default: the system's trust store), ``cert_file`` and ``key_file`` a client
    certificate for etcd's ``--client-cert-auth``. Authentication: ``username`` and ``password``, both or neither.
    A file that cannot be used, or a half-given setting, is a :class:`ValueError` here.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = CALL_TIMEOUT,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        tls_files = ca_file is not None or cert_file is not None or key_file is not None
        https = any(e.startswith("https://") for e in self.endpoints)
        if tls_files and not https:
            # Files given for plain http would be ignored: the settings meant TLS, and would not get it.
            raise ValueError(f"etcd TLS files given, but no endpoint is https:// ({', '.join(self.endpoints)})")
        self._ssl: ssl.SSLContext | None = client_context(ca_file, cert_file, key_file) if https else None
        if (username is None) != (password is None):
            raise ValueError("etcd authentication needs both a user name and a password")
        self._tokens = (
            Tokens(username, password, self._authenticate) if username is not None and password is not None else None
        )
        self._current = 0  # the member that answered last: asked first
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    @property
    def url(self) -> str:
        return ",".join(self.endpoints)

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
        self._session = aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode())

    async def close(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: Json) -> Json:
        """One call: its answer, or the registry's error for what went wrong."""
        answer: Json = {}

        async def read(response: aiohttp.ClientResponse) -> None:
            nonlocal answer
            answer = _decode(await response.read(), response.status, _origin(response))

        await self._call(path, body, read, aiohttp.ClientTimeout(total=self._timeout))
        return answer

    async def stream(self, path: str, body: Json, on_message: Callable[[Json], Awaitable[None]]) -> None:
        """A streaming call (a watch): ``on_message`` for each message, until the stream ends or breaks.

        The gateway writes one JSON message per line. Lines are split here rather than with ``readline``, whose
        length limit a large batch of events would exceed.
        """
        delivered = False

        async def follow(response: aiohttp.ClientResponse) -> None:
            nonlocal delivered
            if response.status != 200:
                _decode(await response.read(), response.status, _origin(response))  # raises
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        message = _message(_decode(line, 200, _origin(response)))
                    except TokenRefused as exc:
                        if delivered:  # as below: a retry would start the stream over, repeating what went out
                            raise RegistryUnavailable(exc.endpoint, exc.message) from exc
                        raise
                    refusal = watch_refusal(message)
                    if refusal is not None:
                        # Retried with a new token only if nothing was delivered: a retry starts the stream over.
                        if delivered:
                            raise RegistryUnavailable(_origin(response), refusal)
                        raise TokenRefused(_origin(response), refusal)
                    delivered = True
                    await on_message(message)

        await self._call(path, body, follow, aiohttp.ClientTimeout(total=None, sock_connect=self._timeout))

    async def _call(
        self,
        path: str,
        body: Json,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[None]],
        limits: aiohttp.ClientTimeout,
    ) -> None:
        """A request with the current token; again once with a new one if etcd refused the token."""
        if self._tokens is None:
            try:
                await self._request(path, body, handle, limits, None)
            except TokenRefused as exc:
                reason = "authentication is on; give the registry a user name and password"
                raise RegistryAuthError(exc.endpoint, None, reason) from exc
            return
        epoch, token = await self._tokens.current()
        try:
            await self._request(path, body, handle, limits, token)
            return
        except TokenRefused:
            await self._tokens.renew(epoch)  # a refused token: nothing was applied, the call can be repeated
        _, token = await self._tokens.current()
        try:
            await self._request(path, body, handle, limits, token)
        except TokenRefused as exc:
            reason = f"it refused the token it had just issued ({exc.message})"
            raise RegistryAuthError(exc.endpoint, self._tokens.user, reason) from exc

    async def _authenticate(self, user: str, password: str) -> str | None:
        """A new token for ``user`` (None: the cluster has authentication off), from any member."""
        answer: Json = {}

        async def read(response: aiohttp.ClientResponse) -> None:
            nonlocal answer
            answer = _decode(await response.read(), response.status, _origin(response))

        try:
            body = {"name": user, "password": password}
            await self._request("/v3/auth/authenticate", body, read, aiohttp.ClientTimeout(total=self._timeout), None)
        except Refused as exc:
            if not_enabled(exc.message):
                return None
            raise user_refused(exc.endpoint, user, exc.message) from exc
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise RegistryError("etcd answered an authentication without a token")
        return token

    async def _request(
        self,
        path: str,
        body: Json,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[None]],
        limits: aiohttp.ClientTimeout,
        token: str | None,
    ) -> None:
        if self.closed or self._session is None:
            raise RegistryClosed("the registry was closed" if self.closed else "the registry is not open")
        data = orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = token
        reasons: list[str] = []
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                async with self._session.post(
                    f"{endpoint}{path}", data=data, headers=headers, timeout=limits
                ) as response:
                    self._current = index
                    await handle(response)
                    return
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Never connected, so nothing was sent: the next member may take the call.
                reasons.append(f"{endpoint}: {handshake_refused(exc) or _reason(exc)}")
                if self.closed:
                    raise RegistryClosed("the registry was closed") from exc
            except RegistryUnavailable:
                self._current = (index + 1) % len(self.endpoints)  # it answered that it cannot serve: ask another next
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if self.closed:
                    raise RegistryClosed("the registry was closed") from exc
                tls = certificate_refused(exc)
                if tls is not None:
                    # A TLS 1.3 server refuses a client certificate after the client's side of the handshake is
                    # done, so the refusal breaks the request's read: the request never reached etcd.
                    reasons.append(f"{endpoint}: {tls}")
                    continue
                # Sent, perhaps applied: not retried here. The next call asks another member first.
                self._current = (index + 1) % len(self.endpoints)
                raise RegistryUnavailable(endpoint, _reason(exc)) from exc
        raise RegistryUnavailable(self.url, "; ".join(reasons))


def _message(answer: Json) -> Json:
    """A streamed message's payload: the gateway wraps each in ``result`` (or sends ``error``)."""
    result = answer.get("result")
    if not isinstance(result, dict):
        raise RegistryError(f"etcd streamed a message without a result: {str(answer)[:200]}")
    return result


def _origin(response: aiohttp.ClientResponse) -> str:
    return str(response.url.origin())


def _decode(body: bytes, status: int, endpoint: str) -> Json:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if status in _UNAVAILABLE_STATUS:  # a proxy's page for a member that is down
            raise RegistryUnavailable(endpoint, f"HTTP {status}") from exc
        raise RegistryError(f"etcd answered HTTP {status} with a body that is not JSON: {body[:80]!r}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"etcd answered HTTP {status} with {type(data).__name__}, not an object")
    error = data.get("error")
    if status == 200 and error is None:
        return data
    message = str(data.get("message") or error or f"HTTP {status}")
    if isinstance(error, dict):  # a streamed error: {"error": {"grpc_code": ..., "message": ...}}
        message = str(error.get("message", message))
    code = data.get("code", error.get("grpc_code") if isinstance(error, dict) else None)
    if _COMPACTED in message:
        raise CompactedError(0)
    if code in _UNAVAILABLE_CODES or status in _UNAVAILABLE_STATUS:
        raise RegistryUnavailable(endpoint, message)
    if refuses_token(code, message):
        raise TokenRefused(endpoint, message)
    raise Refused(endpoint, code, message)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
