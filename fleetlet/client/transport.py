"""The client's side of the wire: the endpoint, the HTTP session, requests and their answers, and the mapping of
every failure (aiohttp's, the OS's, the API's refusals) to a :class:`~fleetlet.client.errors.ClientError`.

Every request carries ``?alt=json`` as fleetctl's did.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import anyio
import orjson
from yarl import URL

from fleetlet.client.errors import (
    APIRequestFailed,
    ClientError,
    EndpointUnreachable,
    InvalidEndpoint,
    InvalidUnit,
    UnexpectedResponse,
    UnitNotFound,
)

# Seconds per request. fleetctl's --request-timeout defaulted to 3; embedding programs get a little more slack, and
# a long list is many requests of one page each, so the limit never grows with the cluster.
DEFAULT_TIMEOUT: Final = 5.0
API_PREFIX: Final = "/fleet/v1"
# fleetlet's own resources (a unit's status and journal, the event stream), beside fleet's.
OWN_PREFIX: Final = "/v1"
_UNIX_BASE: Final = URL("http://localhost")
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Subject:
    """What a request is about, to name what a refusal means: the unit ``name``, and whether its file was sent.

    A 404 about a unit is :class:`UnitNotFound`; a 400 to a request that sent a unit file is :class:`InvalidUnit`.
    """

    unit: str
    sends_file: bool = False


class Transport:
    """One HTTP session to the API at ``endpoint``; each request, body included, within ``timeout`` seconds."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.root, self._socket = parse_endpoint(endpoint)
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        connector = aiohttp.UnixConnector(self._socket) if self._socket is not None else aiohttp.TCPConnector()
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ClientError("the client is not open: use it as `async with Client(endpoint) as fleet:`")
        return self._session

    def url(self, prefix: str, path: Sequence[str], params: dict[str, str] | None) -> URL:
        return self.root.with_path(prefix).joinpath(*path).with_query({"alt": "json", **(params or {})})

    async def request(
        self,
        method: str,
        *path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        prefix: str = API_PREFIX,
    ) -> Answer:
        session = self.session()
        url = self.url(prefix, path, params)
        headers = _JSON_HEADERS if body is not None else None
        with request_errors(self.endpoint, self.timeout):
            async with session.request(method, url, data=body, headers=headers) as response:
                return Answer(response.status, await response.read())

    async def json(
        self,
        method: str,
        *path: str,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        prefix: str = API_PREFIX,
        subject: Subject | None = None,
    ) -> Any:
        answer = await self.request(method, *path, params=params, body=body, prefix=prefix)
        return self.decode(answer, subject)

    def decode(self, answer: Answer, subject: Subject | None = None) -> Any:
        """The JSON of a success (None when empty); fleet's error body as an APIRequestFailed otherwise."""
        try:
            doc = orjson.loads(answer.body) if answer.body else None
        except orjson.JSONDecodeError:
            raise UnexpectedResponse(self.endpoint, answer.status, "the body is not JSON") from None
        if answer.status < 400:
            return doc
        error = doc.get("error") if isinstance(doc, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str):
            raise UnexpectedResponse(self.endpoint, answer.status, "no fleet error body")
        raise refusal(answer.status, message, subject)

    async def text_lines(
        self, prefix: str, path: Sequence[str], params: dict[str, str], *, follow: bool, subject: Subject
    ) -> AsyncGenerator[str, None]:
        """The lines of a ``text/plain`` answer as they arrive, without their newlines.

        Following, no total and no read timeout: a quiet journal is not a dead server. The answer's head must
        still come within the timeout (fail_after), and without following the session's total applies.
        """
        session = self.session()
        url = self.url(prefix, path, params)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout) if follow else session.timeout
        with request_errors(self.endpoint, self.timeout):
            async with AsyncExitStack() as stack:
                with anyio.fail_after(self.timeout):
                    response = await stack.enter_async_context(session.request("GET", url, timeout=timeout))
                    if response.status >= 400:
                        self.decode(Answer(response.status, await response.read()), subject)  # raises
                if response.content_type != "text/plain":
                    raise UnexpectedResponse(self.endpoint, response.status, f"the {path[-1]} is not text/plain")
                async for line in _lines(response.content):
                    yield line


def refusal(status: int, message: str, subject: Subject | None) -> APIRequestFailed:
    """The error of the API's refusal, as specific as what the request was about lets it be."""
    if subject is not None and status == 404:
        return UnitNotFound(subject.unit, status, message)
    if subject is not None and subject.sends_file and status == 400:
        return InvalidUnit(subject.unit, status, message)
    return APIRequestFailed(status, message)


def parse_endpoint(endpoint: str) -> tuple[URL, str | None]:
    """The root URL of the API's server and, for ``unix://``, the socket's path."""
    url = URL(endpoint)
    if url.scheme == "unix":
        if url.host or url.path in ("", "/"):
            raise InvalidEndpoint(endpoint, "expected an absolute socket path: unix:///path/to.sock")
        return _UNIX_BASE, url.path
    if url.scheme in ("http", "https"):
        if not url.host:
            raise InvalidEndpoint(endpoint, "no host")
        return url.with_path("/").with_query(None).with_fragment(None), None
    raise InvalidEndpoint(endpoint, "expected http://HOST:PORT, https://HOST:PORT or unix:///PATH")


@contextmanager
def request_errors(endpoint: str, timeout: float) -> Iterator[None]:
    """aiohttp's and the OS's errors as :class:`EndpointUnreachable`, named after the endpoint."""
    try:
        yield
    except TimeoutError as e:  # before ClientError: aiohttp's timeouts are both
        raise EndpointUnreachable(endpoint, f"no answer within {timeout:g}s") from e
    except aiohttp.ClientConnectorError as e:
        raise EndpointUnreachable(endpoint, _os_reason(e.os_error)) from e
    except (aiohttp.ClientError, OSError) as e:
        raise EndpointUnreachable(endpoint, f"connection lost: {e}") from e


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The lines of a text body as they arrive, however long (aiohttp's own line reader caps their length)."""
    pending = b""
    async for chunk in content.iter_any():
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such socket"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error)
