"""What several handlers do with a request: read one query value or a count, check the body's type, find the unit."""

from __future__ import annotations

import orjson
from aiohttp import web

from fleetlet.api.errors import APIError
from fleetlet.api.wire import JSON
from fleetlet.registry.model import UnitRecord
from fleetlet.registry.protocol import Registry

JSON_TYPE = "application/json"
UNIT_NOT_FOUND = "unit does not exist"


def json_response(doc: JSON) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type=JSON_TYPE)


def one_query_value(request: web.Request, key: str, default: str = "") -> str:
    """The query parameter ``key``; ``default`` when absent, 400 when given twice (which one would count?)."""
    values = request.query.getall(key, [])
    if len(values) > 1:
        raise APIError(400, f"too many values for {key}")
    return values[0] if values else default


def non_negative_int(key: str, text: str) -> int:
    """A query value that counts something (lines, an index); APIError 400 naming ``key`` otherwise."""
    try:
        if text.isascii() and text.isdigit():
            return int(text)
    except ValueError:  # more digits than Python converts
        pass
    raise APIError(400, f"{key} must be a non-negative integer, not {text!r}")


def check_content_type(request: web.Request) -> None:
    """Exactly one Content-Type, ``application/json`` (parameters such as charset allowed), as fleet required."""
    values = request.headers.getall("Content-Type", [])
    if len(values) != 1:
        raise APIError(415, f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != JSON_TYPE:
        raise APIError(415, f"only acceptable Content-Type is {JSON_TYPE}")


async def existing_unit(registry: Registry, name: str) -> UnitRecord:
    """The unit called ``name``; 404 when the registry has none."""
    record = await registry.get_unit(name)
    if record is None:
        raise APIError(404, UNIT_NOT_FOUND)
    return record
