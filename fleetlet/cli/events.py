"""``fleetlet events [--topic T]... [--machine ID] [--index N] [--json]``: the cluster's events as they happen.

One line per event, in local time::

    = 12:00:58 unit hello.service submitted
    12:01:01 schedule hello.service placed on 1a2b3c4d
    12:01:03 state hello.service@1a2b3c4d active/running (was activating/start)
    12:01:03 journal hello.service[stdout]: Hello World

A unit's journal entries come only with ``--topic journal:NAME`` (a glob), stamped with the entry's own time;
only those written while the command runs: ``fleetlet journal NAME`` shows what came before.

Without ``--index`` the stream begins with what exists (lines starting with ``=``: the snapshot), then changes.
``--json`` prints each event as the JSON document the stream carries, one a line (NDJSON). It runs until Ctrl-C;
a dropped connection or an agent restart is resumed without losing or repeating an event.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from datetime import datetime, tzinfo
from typing import Any, Final

import orjson

from fleetlet.cli import endpoint
from fleetlet.cli.columns import SHORT_MACHINE
from fleetlet.cli.endpoint import run_with_client
from fleetlet.client import Client, Event

SNAPSHOT_MARK: Final = "= "


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "events",
        help="print the cluster's events as they happen",
        description="Print what exists (lines starting with '=') then every change, one line per event, until "
        "Ctrl-C. A dropped connection or an agent restart is resumed without losing or repeating an event.",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="T",
        help="only this topic (unit, schedule, state, machine, leader), or its keys matching a glob: "
        "state:hello*@* (repeatable); journal:NAME adds the journal entries of the units matching NAME",
    )
    parser.add_argument("--machine", metavar="ID", help="only the events that concern this machine (full ID)")
    parser.add_argument(
        "--index", type=_index, metavar="N", help="the changes after event N, without the snapshot first"
    )
    parser.add_argument("--json", action="store_true", help="print each event as JSON, one a line")
    endpoint.add_options(parser)
    parser.set_defaults(run=lambda args: run_with_client(args, lambda fleet: _events(fleet, args)))


async def _events(fleet: Client, args: argparse.Namespace) -> int:
    render = event_json if args.json else format_event
    async with aclosing(fleet.events(args.topic, args.machine, args.index)) as stream:
        async for event in stream:
            print(render(event), flush=True)  # a pipe would otherwise hold the lines back
    return 0


def _index(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not an event index: {text!r}")
    return int(text)


def event_json(event: Event) -> str:
    """The event as the stream's JSON document."""
    doc: dict[str, Any] = {
        "index": event.index,
        "time": event.time,
        "topic": event.topic,
        "type": event.type,
        "key": event.key,
        "payload": event.payload,
    }
    if event.snapshot:
        doc["snapshot"] = True
    return orjson.dumps(doc).decode()


def format_event(event: Event, tz: tzinfo | None = None) -> str:
    """One line for a person: the time (in ``tz``, local by default), the topic, what changed and how.

    Whatever the payload lacks is left out of the line, never an error: a newer agent may send other fields.
    """
    clock = datetime.fromtimestamp(_moment(event), tz).strftime("%H:%M:%S")
    what = _DESCRIBE.get(event.topic, _generic)(event, event.payload)
    return f"{SNAPSHOT_MARK if event.snapshot else ''}{clock} {event.topic} {what}"


def _unit(event: Event, payload: Mapping[str, Any]) -> str:
    name = _text(payload, "name") or event.key
    if event.type == "desired-state-changed":
        desired, previous = _text(payload, "desiredState"), _text(payload, "previousDesiredState")
        return _join(name, desired and f"desired {desired}", previous and f"(was {previous})") or name
    if event.type == "replaced":
        digest = _text(payload, "hash")
        return _join(name, "replaced", digest and f"(hash {digest[:7]})")
    return _join(name, event.type)


def _schedule(event: Event, payload: Mapping[str, Any]) -> str:
    name = _text(payload, "name") or event.key
    machine, previous = _short(_text(payload, "machineID")), _short(_text(payload, "previousMachineID"))
    if event.type == "placed":
        return _join(name, "placed", machine and f"on {machine}")
    if event.type == "moved":
        return _join(name, "moved", machine and f"to {machine}", previous and f"(from {previous})")
    if event.type == "unplaced":
        reasons = [r for r in _list(payload, "reasons") if isinstance(r, str)] or [_text(payload, "reason")]
        because = "; ".join(r for r in reasons if r)
        return f"{name} unplaced" + (f": {because}" if because else "")
    return _join(name, event.type, machine and f"on {machine}")


def _state(event: Event, payload: Mapping[str, Any]) -> str:
    unit, _, machine = event.key.rpartition("@")
    name = _text(payload, "name") or unit or event.key
    where = f"{name}@{_short(_text(payload, 'machineID') or machine)}"
    now, was = _states(payload), _states(_mapping(payload, "previous"))
    return _join(where, now, was and f"(was {was})")


def _states(payload: Mapping[str, Any]) -> str:
    """``active/running``, with the load state when it is not ``loaded`` and the result when it is a failure."""
    load, active, sub, result = (_text(payload, k) for k in ("load", "active", "sub", "result"))
    states = "/".join(s for s in (active, sub) if s)
    return _join(load if load not in ("", "loaded") else "", states, result not in ("", "success") and result)


def _machine(event: Event, payload: Mapping[str, Any]) -> str:
    machine = _short(_text(payload, "id") or event.key)
    metadata = _mapping(payload, "metadata")
    pairs = ",".join(f"{k}={v}" for k, v in sorted(metadata.items()) if isinstance(v, str))
    return _join(machine, event.type, _text(payload, "primaryIP"), pairs)


def _leader(event: Event, payload: Mapping[str, Any]) -> str:
    return _join(_short(_text(payload, "machineID")), event.type)


def _journal(event: Event, payload: Mapping[str, Any]) -> str:
    """journalctl's ``hello.service[stdout]: Hello World``; the supervisor's own lines as ``[fleetlet]``."""
    name, stream = _text(payload, "name") or event.key, _text(payload, "stream")
    return f"{name}{f'[{stream}]' if stream else ''}: {_text(payload, 'message')}"


def _moment(event: Event) -> float:
    """When it happened: a journal entry's own time (the event may come later), else the event's."""
    if event.topic == "journal":
        when = event.payload.get("time")
        if isinstance(when, int | float) and not isinstance(when, bool):
            return float(when)
    return event.time


def _generic(event: Event, payload: Mapping[str, Any]) -> str:
    return _join(event.key, event.type)


_DESCRIBE: Final = {
    "unit": _unit,
    "schedule": _schedule,
    "state": _state,
    "machine": _machine,
    "leader": _leader,
    "journal": _journal,
}


def _short(machine_id: str) -> str:
    return machine_id[:SHORT_MACHINE]


def _join(*words: str | bool) -> str:
    return " ".join(w for w in words if isinstance(w, str) and w)


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    return value if isinstance(value, str) else ""


def _mapping(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


def _list(payload: Mapping[str, Any], key: str) -> Sequence[object]:
    value = payload.get(key)
    return value if isinstance(value, list) else []
