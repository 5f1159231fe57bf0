"""``GET /v1/units/NAME/journal``: a unit's journal as text, one line per entry in journalctl's short format.

``?lines=N`` (fleetctl's 10 by default) says how many of the last entries to send; ``?follow=1`` keeps the answer
open and sends each new entry as it is written, in its own chunk, until the client goes away, the journal closes
(the unit left this machine) or the server shuts down. A unit no machine keeps a journal for has an empty journal.

aiohttp does not cancel a handler when its client disconnects (unless the runner asks it to), and a follower of a
quiet journal never writes, so it would not notice either: the handler looks at its connection every
:data:`CONNECTION_CHECK_SECONDS` on the API's clock. The server's shutdown ends every follower at once, rather than
waiting for them as it waits for ordinary requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from aiohttp import hdrs, web
from anyio.streams.memory import MemoryObjectSendStream

from fleetlet.api.context import ApiContext
from fleetlet.api.errors import APIError
from fleetlet.api.requests import existing_unit, non_negative_int, one_query_value
from fleetlet.clock import Clock
from fleetlet.service.journal import Journal, JournalEntry, format_entry

TEXT_TYPE = "text/plain; charset=utf-8"
# fleetctl journal's --lines default.
DEFAULT_LINES = 10
CONNECTION_CHECK_SECONDS = 1.0
_FOLLOW = {"1": True, "true": True, "0": False, "false": False, "": False}


class Followers:
    """The streams being served (journals followed, event streams), so that the server's shutdown can end them."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self._closed = False

    @contextmanager
    def following(self) -> Iterator[None]:
        """A block that ends (cancelled) when :meth:`close` is called, also if it was called already."""
        with anyio.CancelScope() as scope:
            if self._closed:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield
            finally:
                self._scopes.discard(scope)

    async def close(self, app: web.Application) -> None:
        """End every follower; an ``on_shutdown`` hook of the app."""
        self._closed = True
        for scope in self._scopes:
            scope.cancel()


def routes(ctx: ApiContext, followers: Followers, prefix: str) -> list[web.RouteDef]:
    async def journal(request: web.Request) -> web.StreamResponse:
        lines = non_negative_int("lines", one_query_value(request, "lines", str(DEFAULT_LINES)))
        follow = parse_follow(one_query_value(request, "follow"))
        name = (await existing_unit(ctx.registry, request.match_info["name"])).name
        if not ctx.proxy.forwarded(request):
            entry = await ctx.schedule_entry(name)
            owner = ctx.view.answered_by(entry.machine_id) if entry is not None else None
            if owner is not None:
                return await ctx.proxy.forward(request, owner, followers.following)
        found = ctx.view.journal(name)
        if found is None:
            # Nothing keeps a journal of it, so nothing would ever come: an empty journal, even when following.
            return web.Response(body=b"", headers={hdrs.CONTENT_TYPE: TEXT_TYPE})
        if not follow:
            text = "".join(f"{format_entry(entry, name)}\n" for entry in found.tail(lines))
            return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: TEXT_TYPE})
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: TEXT_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with followers.following():
            await _follow(request, response, found, name, lines, ctx.clock)
        return response

    return [web.get(f"{prefix}/units/{{name}}/journal", journal)]


def parse_follow(text: str) -> bool:
    try:
        return _FOLLOW[text.lower()]
    except KeyError:
        raise APIError(400, f"follow must be 1, true, 0 or false, not {text!r}") from None


async def _follow(
    request: web.Request, response: web.StreamResponse, journal: Journal, name: str, lines: int, clock: Clock
) -> None:
    """Send the last ``lines`` entries, then each new one, until the journal closes or the client goes away."""
    send, receive = anyio.create_memory_object_stream[JournalEntry]()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_feed, journal, send, lines)
        tg.start_soon(_cancel_when_disconnected, request, clock, tg.cancel_scope)
        with receive:
            async for entry in receive:
                try:
                    await response.write(f"{format_entry(entry, name)}\n".encode())
                except ConnectionResetError:
                    break  # the client went away between two checks
        tg.cancel_scope.cancel()  # the journal closed, or the client went away


async def _feed(journal: Journal, send: MemoryObjectSendStream[JournalEntry], lines: int) -> None:
    with send:
        await journal.follow(send, last=lines)


async def _cancel_when_disconnected(request: web.Request, clock: Clock, scope: anyio.CancelScope) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await clock.sleep(CONNECTION_CHECK_SECONDS)
    scope.cancel()
