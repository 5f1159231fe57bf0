"""The ``/units`` resource of fleet's v1 API: list, get, create or replace, set desired state, destroy."""

from __future__ import annotations

from aiohttp import web

from fleetlet.api.context import ApiContext
from fleetlet.api.errors import APIError
from fleetlet.api.requests import UNIT_NOT_FOUND, check_content_type, existing_unit, json_response
from fleetlet.api.submit import check_body_name, check_desired, check_options, check_runnable
from fleetlet.api.wire import parse_unit_body, state_index, unit_json, unit_page_json
from fleetlet.registry.errors import RegistryConflict, UnitNotFound

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
        # The schedule as of the page's own revision: read once for all the pages of a listing while nothing is
        # written, and afresh after any write.
        schedule = (await self._ctx.schedules.at(registry, page.revision)).entries
        on_page = {u.name for u in page.units}
        index = state_index(s for s in self._ctx.view.states() if s.name in on_page)
        options = self._ctx.options
        units = [unit_json(u, schedule.get(u.name), index, options.json_of(u)) for u in page.units]
        return json_response(unit_page_json(units, page.next_token))

    async def get(self, request: web.Request) -> web.Response:
        registry = self._ctx.registry
        record = await existing_unit(registry, request.match_info["name"])
        entry = await self._ctx.schedule_entry(record.name)
        index = state_index(s for s in self._ctx.view.states() if s.name == record.name)
        return json_response(unit_json(record, entry, index, self._ctx.options.json_of(record)))

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            await self._ctx.registry.delete_unit(name)
        except UnitNotFound as e:
            raise APIError(404, UNIT_NOT_FOUND) from e
        return web.Response(status=204)

    async def put(self, request: web.Request) -> web.Response:
        """fleet's rules: absent and no options: 409; new or other options: 201; else desiredState: 204."""
        check_content_type(request)
        body = parse_unit_body(await request.read())
        name = check_body_name(request.match_info["name"], body.name)
        desired = check_desired(body.desired_state) if body.desired_state else None
        check_runnable(name, desired)
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
