"""The ``/state`` resource of fleet's v1 API: what runs where, as the machines report it.

What it reports comes from the :class:`~fleetlet.api.view.NodeView` given to :func:`fleetlet.api.fleet_v1_app`.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterable
from operator import attrgetter

import orjson
from aiohttp import web

from fleetlet.api.errors import APIError
from fleetlet.api.requests import json_response, one_query_value
from fleetlet.api.view import NodeView, UnitState
from fleetlet.api.wire import JSON, omit_empty


def state_json(state: UnitState) -> JSON:
    return omit_empty(
        {
            "hash": state.hash,
            "machineID": state.machine_id,
            "name": state.name,
            "systemdActiveState": state.active,
            "systemdLoadState": state.load,
            "systemdSubState": state.sub,
        }
    )


def routes(view: NodeView, page_size: int, prefix: str) -> list[web.RouteDef]:
    async def list_states(request: web.Request) -> web.Response:
        machine_id = one_query_value(request, "machineID")
        unit_name = one_query_value(request, "unitName")
        after = _page_token(one_query_value(request, "nextPageToken"))
        page, more = page_of(view.states(), page_size, after, machine_id=machine_id, unit_name=unit_name)
        token = _token_of(page[-1]) if more else ""
        return json_response(omit_empty({"states": [state_json(s) for s in page], "nextPageToken": token}))

    return [web.get(f"{prefix}/state", list_states)]


_ORDER = attrgetter("name", "machine_id")


def page_of(
    states: Iterable[UnitState],
    size: int,
    after: tuple[str, str] | None,
    *,
    machine_id: str = "",
    unit_name: str = "",
) -> tuple[list[UnitState], bool]:
    """The first ``size`` states by (unit, machine) after ``after`` that match the filters (empty: any), and
    whether more follow.

    A page costs one pass over the states, not a sort of them all: a listing asks for every page in turn, and the
    view may build its states afresh on each call (the agent's does), so there is no sorted list to keep between
    pages. ``heapq.nsmallest`` is ``sorted()[:n]``, ties kept in the view's order, without sorting the rest.
    """
    wanted: Iterable[UnitState] = states
    if machine_id or unit_name:
        wanted = [s for s in wanted if machine_id in ("", s.machine_id) and unit_name in ("", s.name)]
    if after is not None:
        name, machine = after
        wanted = [s for s in wanted if s.name > name or (s.name == name and s.machine_id > machine)]
    found = heapq.nsmallest(size + 1, wanted, key=_ORDER)
    return found[:size], len(found) > size


def _token_of(state: UnitState) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([state.name, state.machine_id])).decode()


def _page_token(token: str) -> tuple[str, str] | None:
    """The (name, machine) a page ends on; the token is opaque to clients, as fleet's was."""
    if not token:
        return None
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError) as e:
        raise APIError(400, "invalid page token") from e
    if not (isinstance(doc, list) and len(doc) == 2 and all(isinstance(v, str) for v in doc)):
        raise APIError(400, "invalid page token")
    return doc[0], doc[1]
