"""``GET /v1/units/NAME/status``: one unit as ``fleetlet status`` and ``explain`` show it, in one answer.

What the registry holds of the unit (description, hash, desired state, machine), what its machine reports (systemd
states, result, since, restarts, container or main PID, last exit) and, when it has no machine, why: the reasons
the leader gave, one per machine. Empty fields are left out, as everywhere in the API.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from fleetlet.api.context import ApiContext
from fleetlet.api.requests import existing_unit, json_response
from fleetlet.api.wire import JSON, current_state, omit_empty, reported_active, state_index
from fleetlet.engine.snapshot import MachineSpec
from fleetlet.registry.model import ScheduleEntry, UnitRecord
from fleetlet.service.states import UnitStatus
from fleetlet.units.syntax import parse


def description(record: UnitRecord) -> str:
    """The unit's ``[Unit] Description=``; the last one counts, as in systemd."""
    found = ""
    for option in parse(record.text, record.name).options:
        if option.section == "Unit" and option.name == "Description":
            found = option.value
    return found


def status_json(
    record: UnitRecord,
    entry: ScheduleEntry | None,
    reported: str | None,
    status: UnitStatus | None,
    machines: Sequence[MachineSpec],
    reasons: Sequence[str],
) -> JSON:
    """The status document; ``reported`` is the active state the scheduled machine reports, None when silent."""
    machine_id = entry.machine_id if entry is not None else ""
    ip = next((m.public_ip for m in machines if m.id == machine_id), "") if machine_id else ""
    doc: JSON = {
        "name": record.name,
        "description": description(record),
        "hash": record.hash,
        "desiredState": record.desired_state,
        "currentState": current_state(entry, reported),
        "machineID": machine_id,
        "primaryIP": ip,
        "reasons": list(reasons),
    }
    if status is not None:
        doc |= {
            "loadState": status.load,
            "activeState": status.active,
            "subState": status.sub,
            "result": status.result,
            "since": status.since or None,
            "restarts": status.restarts,
            "containerID": status.container_id,
            "mainPID": status.main_pid,
            "exitStatus": status.exit_status,
        }
    return omit_empty(doc)


def routes(ctx: ApiContext, prefix: str) -> list[web.RouteDef]:
    async def unit_status(request: web.Request) -> web.StreamResponse:
        registry = ctx.registry
        record = await existing_unit(registry, request.match_info["name"])
        entry = await ctx.schedule_entry(record.name)
        view = ctx.view
        owner = None if ctx.proxy.forwarded(request) else view.answered_by(entry.machine_id if entry else None)
        if owner is not None:
            return await ctx.proxy.forward(request, owner)
        index = state_index(s for s in view.states() if s.name == record.name)
        doc = status_json(
            record,
            entry,
            reported_active(index, record.name, entry),
            view.status(record.name),
            view.machines(),
            view.unplaceable().get(record.name, ()),
        )
        return json_response(doc)

    return [web.get(f"{prefix}/units/{{name}}/status", unit_status)]
