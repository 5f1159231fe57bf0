"""The ``/machines`` resource of fleet's v1 API: list the machines, and change their metadata with ``PATCH``.

What it reports and changes goes through the :class:`~fleetlet.api.view.NodeView` given to
:func:`fleetlet.api.fleet_v1_app`.
"""

from __future__ import annotations

from aiohttp import web

from fleetlet.api.errors import APIError
from fleetlet.api.metadata_patch import MACHINE_NOT_FOUND, parse_operations, plan
from fleetlet.api.requests import check_content_type, json_response
from fleetlet.api.view import NodeView, UnknownMachine
from fleetlet.api.wire import JSON, omit_empty
from fleetlet.engine.snapshot import MachineSpec


def machine_json(machine: MachineSpec) -> JSON:
    return omit_empty({"id": machine.id, "primaryIP": machine.public_ip, "metadata": dict(machine.metadata)})


def routes(view: NodeView, prefix: str) -> list[web.RouteDef]:
    async def list_machines(request: web.Request) -> web.Response:
        listed = sorted(view.machines(), key=lambda m: m.id)
        return json_response(omit_empty({"machines": [machine_json(m) for m in listed]}))

    async def patch_machines(request: web.Request) -> web.Response:
        """Check every operation, then set each changed machine's whole metadata: all of them or nothing."""
        check_content_type(request)
        operations = parse_operations(await request.read())
        # No await from here on: the machines cannot change between the plan and its application.
        changes = plan({m.id: m.metadata for m in view.machines()}, operations)
        for machine_id, metadata in changes.items():
            try:
                view.set_metadata(machine_id, metadata)
            except UnknownMachine as e:
                raise APIError(404, MACHINE_NOT_FOUND) from e
        return web.Response(status=204)

    return [web.get(f"{prefix}/machines", list_machines), web.patch(f"{prefix}/machines", patch_machines)]
