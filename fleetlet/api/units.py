"""The ``/units`` resource of fleet's v1 API: list, get, create or replace, set desired state, destroy."""

from __future__ import annotations

import orjson
from aiohttp import web

from fleetlet.api.context import ApiContext
from fleetlet.api.errors import APIError
from fleetlet.api.submit import check_body_name, check_desired, check_options
from fleetlet.api.wire import JSON, parse_unit_body, unit_json, unit_page_json
from fleetlet.registry.errors import RegistryConflict, UnitNotFound
from fleetlet.registry.model import UnitRecord

JSON_TYPE = "application/json"
NOT_FOUND = "unit does not exist"
# How often a PUT re-reads and decides again when another writer changed the unit between its read and its write.
PUT_ATTEMPTS = 3


def routes(ctx: ApiContext, prefix: str) -> list[web.RouteDef]:
    units = Units(ctx)
    return [
        web.get(f"{prefix}/units", units.list),
        web.get(f"{prefix}/units/{{name}}", units.get),
        web.put(f"{prefix}/units/{{name}}", units.put),
        web.delete(f"{prefix}/units/{{name}}", units.delete),
    ]


def json_response(doc: JSON) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type=JSON_TYPE)


class Units:
    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    async def list(self, request: web.Request) -> web.Response:
        tokens = request.query.getall("nextPageToken", [])
        if len(tokens) > 1:
            raise APIError(400, "too many values for page token")
        registry = self._ctx.registry
        try:
            page = await registry.list_units(limit=self._ctx.page_size, after=tokens[0] if tokens else None)
        except ValueError as e:
            raise APIError(400, str(e)) from e
        schedule = (await registry.schedule()).entries
        units = [unit_json(u, schedule.get(u.name)) for u in page.units]
        return json_response(unit_page_json(units, page.next_token))

    async def get(self, request: web.Request) -> web.Response:
        record = await self._existing(request.match_info["name"])
        entry = (await self._ctx.registry.schedule()).entries.get(record.name)
        return json_response(unit_json(record, entry))

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await self._ctx.registry.delete_unit(name)
        except UnitNotFound as e:
            raise APIError(404, NOT_FOUND) from e
        return web.Response(status=204)

    async def put(self, request: web.Request) -> web.Response:
        """fleet's rules: absent and no options: 409; new or other options: 201; else desiredState: 204."""
        _check_content_type(request)
        body = parse_unit_body(await request.read())
        name = check_body_name(request.match_info["name"], body.name)
        desired = check_desired(body.desired_state) if body.desired_state else None
        unit = check_options(name, body.options) if body.options else None
        registry = self._ctx.registry
        for _ in range(PUT_ATTEMPTS):
            existing = await registry.get_unit(name)
            try:
                if unit is not None and (existing is None or existing.hash != unit.hash):
                    await registry.put_unit(
                        name,
                        unit,
                        desired_state=desired or "inactive",
                        expect_revision=existing.revision if existing else 0,
                    )
                    return web.Response(status=201)
                if existing is None:
                    raise APIError(409, "unit does not exist and options field empty")
                if desired is None:
                    raise APIError(409, "must provide DesiredState to update existing unit")
                await registry.set_desired_state(name, desired, expect_revision=existing.revision)
                return web.Response(status=204)
            except (RegistryConflict, UnitNotFound):
                continue  # changed under us: read again and decide again
        raise APIError(409, f"unit {name} changed concurrently {PUT_ATTEMPTS} times; try again")

    async def _existing(self, name: str) -> UnitRecord:
        record = await self._ctx.registry.get_unit(name)
        if record is None:
            raise APIError(404, NOT_FOUND)
        return record


def _check_content_type(request: web.Request) -> None:
    """Exactly one Content-Type, ``application/json`` (parameters such as charset allowed), as fleet required."""
    values = request.headers.getall("Content-Type", [])
    if len(values) != 1:
        raise APIError(415, f"expected 1 Content-Type, got {len(values)}")
    if values[0].split(";", 1)[0].strip() != JSON_TYPE:
        raise APIError(415, f"only acceptable Content-Type is {JSON_TYPE}")
