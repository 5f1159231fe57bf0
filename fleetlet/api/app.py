"""The aiohttp application serving fleet's v1 API, under ``/fleet/v1`` and its older name ``/v1-alpha``, and what
fleetlet adds under its own ``/v1``: a unit's status and its journal.

Every answer that is not a success carries fleet's error body, whoever produced it: a handler (APIError),
aiohttp's router (unknown path, wrong method), its body reader (too large), or a bug (500, logged). Query
parameters a handler does not read are ignored, ``?alt=json`` above all: fleetctl sends it on every request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web
from aiohttp.typedefs import Handler

from fleetlet.api import events as event_stream
from fleetlet.api import journal, machines, state, status, units
from fleetlet.api import registry as registry_routes
from fleetlet.api.context import PAGE_SIZE, ApiContext
from fleetlet.api.errors import APIError
from fleetlet.api.view import NodeView, StaticView
from fleetlet.api.wire import error_json
from fleetlet.clock import Clock, SystemClock
from fleetlet.cluster.websocket import GossipEndpoint
from fleetlet.events.hub import EventHub
from fleetlet.events.journal_taps import JournalTaps
from fleetlet.registry.errors import RegistryUnavailable
from fleetlet.registry.protocol import Registry
from fleetlet.units.syntax import MAX_UNIT_FILE_BYTES

log = logging.getLogger(__name__)

PREFIXES = ("/fleet/v1", "/v1-alpha")
# fleetlet's own resources, which fleet's API did not have (fleetctl reached journals and statuses over ssh).
OWN_PREFIX = "/v1"
# A unit's text may be 1 MiB; its JSON form adds quoting and the option objects' keys around it.
MAX_BODY_BYTES = MAX_UNIT_FILE_BYTES + 256 * 1024
_METHOD_ORDER = ("GET", "PUT", "PATCH", "POST", "DELETE")


def fleet_v1_app(
    registry: Registry,
    *,
    page_size: int | None = None,
    view: NodeView | None = None,
    clock: Clock | None = None,
    events: EventHub | None = None,
    journal_taps: JournalTaps | None = None,
    registry_events: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    gossip: GossipEndpoint | None = None,
    registry_service: registry_routes.RegistryService | None = None,
) -> web.Application:
    """The fleet v1 API over ``registry``; ``page_size`` units or states per page (fleet's 100 by default).

    ``view`` says what the API reports beyond the registry (machines, states, journals); by default, nothing.
    ``clock`` paces the checks a journal follower makes of its connection, and the event stream's heartbeats.
    ``events`` is the hub ``/v1/events`` streams; without one, that resource answers 404. ``journal_taps`` publish
    the unit journals a subscriber asks for (``topic=journal:NAME``) into that hub; without them, asking is a 400.
    ``registry_events`` holds the hub's feed of ``unit`` and ``schedule`` events while a subscriber that can get them
    is connected, on an agent that runs that feed on demand; without it, the feed is taken to run always.
    ``gossip`` serves the cluster's gossip at ``/v1/gossip``; its connections close when the app shuts down.
    ``registry_service`` serves the registry to the cluster's other agents at ``/v1/registry``.
    """
    view = view if view is not None else StaticView()
    ctx = ApiContext(registry, view, clock or SystemClock(), page_size or PAGE_SIZE)
    followers = journal.Followers()
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app.on_shutdown.append(followers.close)
    app.on_cleanup.append(ctx.proxy.close)
    for prefix in PREFIXES:
        app.add_routes(units.routes(ctx, prefix))
        app.add_routes(state.routes(view, ctx.page_size, prefix))
        app.add_routes(machines.routes(view, prefix))
    app.add_routes(status.routes(ctx, OWN_PREFIX))
    app.add_routes(journal.routes(ctx, followers, OWN_PREFIX))
    app.add_routes(event_stream.routes(events, ctx.clock, followers, OWN_PREFIX, journal_taps, registry_events))
    if registry_service is not None:
        app.add_routes(registry_routes.routes(registry_service, followers))
    if gossip is not None:
        app.add_routes(gossip.routes())
        app.on_shutdown.append(gossip.close)
    return app


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=error_json(status, message), content_type="application/json", headers=headers
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as e:
        return error_response(e.status, e.message)
    except RegistryUnavailable as e:  # a joined agent whose server is down: try again later
        return error_response(503, str(e))
    except web.HTTPMethodNotAllowed as e:
        allowed = [m for m in _METHOD_ORDER if m in e.allowed_methods]
        return error_response(
            405, f"only {_enumerate(allowed)} supported against this resource", {"Allow": ", ".join(allowed)}
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"request body too large: the limit is {MAX_BODY_BYTES} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = "resource not found" if e.status == 404 else e.reason
        return error_response(e.status, message)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error; see the agent's log")


def _enumerate(words: list[str]) -> str:
    """``GET``, ``GET and PUT``, ``GET, PUT and DELETE``: fleet's wording."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
