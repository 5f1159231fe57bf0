"""The ``/state`` resource of fleet's v1 API: what runs where, as the machines report it.

What it reports comes from the :class:`~fleetlet.api.view.NodeView` given to :func:`fleetlet.api.fleet_v1_app`.
"""

from __future__ import annotations

import base64
import binascii

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
        found = sorted(
            (s for s in view.states() if machine_id in ("", s.machine_id) and unit_name in ("", s.name)),
            key=lambda s: (s.name, s.machine_id),
        )
        if after is not None:
            found = [s for s in found if (s.name, s.machine_id) > after]
        page, rest = found[:page_size], found[page_size:]
        token = _token_of(page[-1]) if rest else ""
        return json_response(omit_empty({"states": [state_json(s) for s in page], "nextPageToken": token}))

    return [web.get(f"{prefix}/state", list_states)]


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
