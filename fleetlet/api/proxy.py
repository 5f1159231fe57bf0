"""Answering for another machine: a unit's status and journal come from the agent that runs the unit.

A unit's full status (its container, PID, restarts) and its journal live on its machine; fleetctl reached them over
ssh. Any member's API answers for them instead by forwarding the request to the member the unit is placed on (and
the status of a unit with no machine to the leader, which knows why), streaming the answer back as it comes, so a
followed journal follows. A forwarded request carries :data:`PROXIED_HEADER` and is never forwarded again: two
members that disagree about where a unit is answer from what they have, instead of passing the request back and
forth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import aiohttp
from aiohttp import hdrs, web

from fleetlet.api.errors import APIError

PROXIED_HEADER = "X-Fleetlet-Proxied"
CONNECT_TIMEOUT = 5.0


class Proxy:
    """One client session for every forwarded request of an API; closed with the app (an ``on_cleanup`` hook)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def forwarded(request: web.Request) -> bool:
        """Whether ``request`` was forwarded by another member already (and must be answered here)."""
        return PROXIED_HEADER in request.headers

    async def forward(
        self,
        request: web.Request,
        member_url: str,
        streaming: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> web.StreamResponse:
        """The answer of the member at ``member_url`` to the same GET, streamed; a 502 when it cannot be reached.

        ``streaming`` is a block the relaying runs in: one the server's shutdown cancels, for a followed journal.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{member_url.rstrip('/')}{request.path_qs}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        try:
            upstream = await self._session.get(url, headers={PROXIED_HEADER: "1"}, timeout=timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise APIError(502, f"the machine that runs the unit, at {member_url}, cannot be reached: {exc}") from exc
        async with upstream:  # released however the relaying ends
            response = web.StreamResponse(status=upstream.status)
            if hdrs.CONTENT_TYPE in upstream.headers:
                response.headers[hdrs.CONTENT_TYPE] = upstream.headers[hdrs.CONTENT_TYPE]
            response.enable_chunked_encoding()
            await response.prepare(request)
            with streaming():
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    pass  # either end went away mid-stream: the answer ends there
            return response

    async def close(self, app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
