"""The async client of fleet's v1 API, over HTTP(S) or a unix socket: what the CLI and embedding programs call.

``async with Client("unix:///var/run/fleetlet.sock") as fleet:`` then ``await fleet.start("hello.service")``.
Each method is one operation of the API, with typed records in and out; the wire is :mod:`.transport`'s, the
event stream :mod:`.events`', the waiting :mod:`.waiting`'s, and every failure a :class:`.ClientError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, overload

import orjson

from fleetlet.client.errors import (
    APIRequestFailed,
    ClientError,
    MachineNotFound,
    UnexpectedResponse,
    UnitConflict,
    UnitNotFound,
    WaitTimedOut,
)
from fleetlet.client.events import RECONNECT_FOR, event_stream
from fleetlet.client.explanation import Explanation, explanation
from fleetlet.client.poll import ClusterPoll
from fleetlet.client.records import (
    Event,
    Machine,
    MetadataOp,
    Unit,
    UnitReport,
    UnitState,
    as_list,
    as_object,
    collector_paused,
    decode_machine,
    decode_report,
    decode_unit,
    decode_unit_state,
    metadata_ops,
    options_json,
)
from fleetlet.client.transport import DEFAULT_TIMEOUT, OWN_PREFIX, Subject, Transport
from fleetlet.client.waiting import Goal, UnitProgress, Verdict, problem, wait_for
from fleetlet.clock import Clock, SystemClock
from fleetlet.registry.model import DesiredState
from fleetlet.units.model import UnitFile

# fleetctl journal's --lines default.
JOURNAL_LINES: Final = 10
# Whether the time a wait may take is up (None: it has no limit). A wait's ``timeout`` is read on the client's
# clock, so tests need not sleep, and bounds its polls rather than cancelling a request (hence noqa: ASYNC109).
Expiry: TypeAlias = Callable[[], bool] | None


class Client:
    """fleet's v1 API at ``endpoint`` (``http://host:port``, ``https://host:port`` or ``unix:///path.sock``).

    Use as ``async with Client(endpoint) as fleet:``; each request, body included, must finish within
    ``timeout`` seconds or fails with :class:`EndpointUnreachable`. ``clock`` times the waits between reconnections
    of the event stream and between the polls of a wait (``start(name, wait=True)``), and a wait's ``timeout``.
    """

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT, clock: Clock | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._transport = Transport(endpoint, timeout)

    async def __aenter__(self) -> Self:
        self._transport.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.close()

    # --- listings --------------------------------------------------------------------------------------------

    async def units(self) -> list[Unit]:
        """Every unit, in name order, following ``nextPageToken`` across pages.

        A list, not an async iterator: its callers (``list-unit-files``, ``start``'s globs) need every unit before
        printing a line to size the columns, and a list leaves no half-consumed generator holding a connection
        when a caller breaks out early.
        """
        return await self._pages("units", {}, "units", decode_unit)

    async def unit_files(self) -> list[Unit]:
        """Every unit, as ``fleetctl list-unit-files`` lists them: :meth:`units` under the command's name."""
        return await self.units()

    async def states(self, machine_id: str | None = None, unit_name: str | None = None) -> list[UnitState]:
        """Every unit state, or those of one machine or one unit, in unit name order across pages."""
        filters = {k: v for k, v in (("machineID", machine_id), ("unitName", unit_name)) if v}
        return await self._pages("state", filters, "states", decode_unit_state)

    async def machines(self) -> list[Machine]:
        """Every machine of the cluster, in ID order."""
        page = as_object(await self._transport.json("GET", "machines"), self.endpoint)
        return [decode_machine(doc, self.endpoint) for doc in as_list(page.get("machines", []), self.endpoint)]

    async def _pages(
        self, resource: str, filters: dict[str, str], key: str, decode: Callable[[object, str], Any]
    ) -> list[Any]:
        found: list[Any] = []
        token: str | None = None
        while True:
            params = {**filters, "nextPageToken": token} if token else filters
            answer = await self._transport.request("GET", resource, params=params)
            with collector_paused():
                page = as_object(self._transport.decode(answer), self.endpoint)
                found.extend(decode(doc, self.endpoint) for doc in as_list(page.get(key, []), self.endpoint))
            token = page.get("nextPageToken")
            if not token:
                return found
            if not isinstance(token, str):
                raise UnexpectedResponse(self.endpoint, 200, "nextPageToken is not a string")

    # --- one unit --------------------------------------------------------------------------------------------

    async def unit(self, name: str) -> Unit | None:
        """The unit called ``name``, or None when there is none."""
        answer = await self._transport.request("GET", "units", name)
        if answer.status == 404:
            return None
        return decode_unit(self._transport.decode(answer), self.endpoint)

    async def cat(self, name: str) -> str:
        """The unit file as the cluster holds it, as ``fleetctl cat`` prints it; :class:`UnitNotFound` if none."""
        unit = await self.unit(name)
        if unit is None:
            raise UnitNotFound(name)
        return unit.unit_file.serialize()

    async def status(self, name: str) -> UnitReport:
        """The unit's status; :class:`UnitNotFound` when there is no such unit."""
        doc = await self._transport.json("GET", "units", name, "status", prefix=OWN_PREFIX, subject=Subject(name))
        return decode_report(doc, self.endpoint)

    async def explain(self, name: str) -> Explanation:
        """Where the unit is scheduled and what it asks of machines, or why no machine can take it."""
        report = await self.status(name)
        unit = await self.unit(name)
        return explanation(report, unit.options if unit is not None else ())

    def journal(self, name: str, lines: int = JOURNAL_LINES, *, follow: bool = False) -> AsyncGenerator[str, None]:
        """The last ``lines`` lines of the unit's journal, without their newlines; then, with ``follow``, each new
        line as it comes, until the journal or the connection ends.

        Following is not bound by the client's ``timeout``, only connecting and the answer's first byte are.
        Close the iterator when leaving it early (``contextlib.aclosing``): it holds a connection.
        :class:`UnitNotFound` when there is no such unit.
        """
        if lines < 0:
            raise ValueError("lines must not be negative")
        params = {"lines": str(lines), **({"follow": "1"} if follow else {})}
        path = ("units", name, "journal")
        return self._transport.text_lines(OWN_PREFIX, path, params, follow=follow, subject=Subject(name))

    # --- changing units --------------------------------------------------------------------------------------

    async def create_unit(self, name: str, unit_file: UnitFile, desired_state: DesiredState = "inactive") -> None:
        """Create ``name``, or replace it when its contents differ, with ``desired_state`` (fleet's PUT).

        :class:`InvalidUnit` when the API refuses the file: its message says where, as ``FILE:LINE: problem``.
        """
        body = {"name": name, "options": options_json(unit_file), "desiredState": desired_state}
        await self._put(name, body, Subject(name, sends_file=True))

    async def submit(self, name: str, unit_file: UnitFile) -> bool:
        """fleetctl's submit: create ``name`` inactive; True if created, False if the same contents were there.

        :class:`UnitConflict` when a unit of that name has other contents (replace it with :meth:`create_unit`).
        """
        existing = await self.unit(name)
        if existing is not None:
            if existing.hash != unit_file.hash:
                raise UnitConflict(name)
            return False
        await self.create_unit(name, unit_file)
        return True

    async def set_desired_state(self, name: str, state: DesiredState) -> None:
        """Set an existing unit's desired state; :class:`UnitNotFound` (HTTP 409, as the API says) when none."""
        try:
            await self._put(name, {"name": name, "desiredState": state}, Subject(name))
        except APIRequestFailed as e:
            # The API's 409 is also its answer to a unit changed under it too often: ask which this is.
            if e.status == 409 and await self.unit(name) is None:
                raise UnitNotFound(name, e.status, e.message) from None
            raise

    @overload
    async def load(self, name: str, *, wait: Literal[False] = False, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    @overload
    async def load(self, name: str, *, wait: Literal[True], timeout: float | None = None) -> UnitProgress: ...  # noqa: ASYNC109
    async def load(self, name: str, *, wait: bool = False, timeout: float | None = None) -> UnitProgress | None:  # noqa: ASYNC109
        """Schedule the unit to a machine without starting it; with ``wait``, until that machine has it loaded.

        See :meth:`start` for what waiting returns and raises.
        """
        return await self._transition(name, "loaded", wait, self._expiry(timeout))

    @overload
    async def start(self, name: str, *, wait: Literal[False] = False, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    @overload
    async def start(self, name: str, *, wait: Literal[True], timeout: float | None = None) -> UnitProgress: ...  # noqa: ASYNC109
    async def start(self, name: str, *, wait: bool = False, timeout: float | None = None) -> UnitProgress | None:  # noqa: ASYNC109
        """Set the unit launched; with ``wait``, poll every half second until it is active on its machine.

        Waiting returns the unit as the last poll saw it, or raises :class:`UnitFailed` (it failed on its
        machine since), :class:`UnitUnplaceable` (no machine can take it), :class:`UnitGone` (destroyed
        meanwhile) or, after ``timeout`` seconds (None: no limit), :class:`WaitTimedOut`. A global unit cannot be
        waited for: no one machine reports it. :class:`UnitNotFound` when there is no such unit.
        """
        return await self._transition(name, "launched", wait, self._expiry(timeout))

    @overload
    async def stop(self, name: str, *, wait: Literal[False] = False, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    @overload
    async def stop(self, name: str, *, wait: Literal[True], timeout: float | None = None) -> UnitProgress: ...  # noqa: ASYNC109
    async def stop(self, name: str, *, wait: bool = False, timeout: float | None = None) -> UnitProgress | None:  # noqa: ASYNC109
        """Stop the unit, leaving it loaded; with ``wait``, until it is stopped (see :meth:`start`)."""
        return await self._transition(name, "loaded", wait, self._expiry(timeout))

    @overload
    async def unload(self, name: str, *, wait: Literal[False] = False, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    @overload
    async def unload(self, name: str, *, wait: Literal[True], timeout: float | None = None) -> UnitProgress: ...  # noqa: ASYNC109
    async def unload(self, name: str, *, wait: bool = False, timeout: float | None = None) -> UnitProgress | None:  # noqa: ASYNC109
        """Unschedule the unit from its machine; with ``wait``, until it is inactive (see :meth:`start`)."""
        return await self._transition(name, "inactive", wait, self._expiry(timeout))

    @overload
    async def restart(self, name: str, *, wait: Literal[False] = False, timeout: float | None = None) -> None: ...  # noqa: ASYNC109
    @overload
    async def restart(self, name: str, *, wait: Literal[True], timeout: float | None = None) -> UnitProgress: ...  # noqa: ASYNC109
    async def restart(self, name: str, *, wait: bool = False, timeout: float | None = None) -> UnitProgress | None:  # noqa: ASYNC109
        """Stop the unit if it is launched, wait until it is stopped, then start it; with ``wait``, wait for the
        start too. ``timeout`` bounds both waits together; see :meth:`start` for what they raise.

        The stop is waited for even without ``wait``: an agent that saw ``loaded`` and ``launched`` in quick
        succession would only see the unit launched, as it already is, and restart nothing.
        """
        unit = await self._waitable(name)
        expired = self._expiry(timeout)
        if unit.desired_state == "launched":
            poll = ClusterPoll(self, "loaded")
            await self.set_desired_state(name, "loaded")
            await self._wait_one(name, "loaded", poll, expired)
        return await self._transition(name, "launched", wait, expired)

    async def destroy(self, name: str, *, wait: bool = False, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Remove the unit; with ``wait``, until the API no longer has it. :class:`UnitNotFound` when none."""
        await self._transport.json("DELETE", "units", name, subject=Subject(name))
        if wait:
            await self._wait_one(name, "destroyed", ClusterPoll(self, "destroyed"), self._expiry(timeout))

    async def _put(self, name: str, body: dict[str, Any], subject: Subject) -> None:
        await self._transport.json("PUT", "units", name, body=orjson.dumps(body), subject=subject)

    # --- waiting ---------------------------------------------------------------------------------------------

    async def _transition(
        self, name: str, state: Literal["launched", "loaded", "inactive"], wait: bool, expired: Expiry
    ) -> UnitProgress | None:
        if not wait:
            await self.set_desired_state(name, state)
            return None
        await self._waitable(name)
        poll = ClusterPoll(self, state)
        # A start's outcome is judged against what the machine reported before it: see waiting.wait_for.
        before = await poll([name]) if state == "launched" else {}
        await self.set_desired_state(name, state)
        return await self._wait_one(name, state, poll, expired, before)

    async def _waitable(self, name: str) -> Unit:
        unit = await self.unit(name)
        if unit is None:
            raise UnitNotFound(name)
        if unit.is_global:
            raise ClientError(f"cannot wait for {name}: a global unit has no one machine to report it")
        return unit

    def _expiry(self, timeout: float | None) -> Expiry:
        """Whether the ``timeout`` seconds from now on the client's clock are up; None for no limit."""
        if timeout is None:
            return None
        deadline = self._clock.monotonic() + timeout
        return lambda: self._clock.monotonic() >= deadline

    async def _wait_one(
        self,
        name: str,
        goal: Goal,
        poll: ClusterPoll,
        expired: Expiry,
        before: Mapping[str, UnitProgress] | None = None,
    ) -> UnitProgress:
        outcome: list[tuple[UnitProgress, Verdict]] = []
        still = await wait_for(
            [name],
            goal,
            poll,
            attempts=0,
            sleep=self._clock.sleep,
            settled=lambda seen, verdict: outcome.append((seen, verdict)),
            before=before,
            expired=expired,
        )
        if still:
            raise WaitTimedOut(goal, still)
        ((seen, verdict),) = outcome
        if verdict != "reached":
            raise problem(verdict, seen)
        return seen

    # --- machines --------------------------------------------------------------------------------------------

    async def patch_machines(self, ops: Sequence[MetadataOp]) -> None:
        """Apply ``ops`` in one request: the API checks them all first and applies all of them or none."""
        await self._transport.json("PATCH", "machines", body=orjson.dumps([op.to_json() for op in ops]))

    async def set_metadata(self, machine_id: str, metadata: Mapping[str, str]) -> None:
        """Make a machine's metadata exactly ``metadata``: the keys it lacks added, others replaced or removed.

        :class:`MachineNotFound` when the cluster has no machine ``machine_id``.
        """
        current = next((m for m in await self.machines() if m.id == machine_id), None)
        if current is None:
            raise MachineNotFound(machine_id)
        ops = metadata_ops(machine_id, current.metadata, metadata)
        if ops:
            await self.patch_machines(ops)

    # --- events ----------------------------------------------------------------------------------------------

    def events(
        self,
        topics: Iterable[str] = (),
        machine: str | None = None,
        index: int | None = None,
        *,
        resume: bool = True,
        reconnect_for: float = RECONNECT_FOR,
    ) -> AsyncGenerator[Event, None]:
        """The cluster's events as they happen, over the agent's websocket, until the caller stops.

        ``topics`` (``state``, ``state:hello*@*``, ...) and ``machine`` filter them. Without ``index``, the stream
        begins with a snapshot (``Event.snapshot``: one event per unit, placement, state, machine and leader that
        exists), then changes: list-then-watch in one call. With ``index``, the changes after that index.

        A dropped connection, a server that restarts or goes away a while, or a stream the server closed because
        this caller read too slowly, is resumed where it stopped: no change lost, none twice. When the server no
        longer has the changes since then (its buffer moved on, or it restarted with a new one), a stream begun
        without an index starts over with a new snapshot, to be taken as the whole state again (as may happen too
        when a connection drops in the middle of a snapshot); one begun with an index raises :class:`EventsLost`.
        Reconnection waits from 0.1 s up to 2 s between attempts and gives up (:class:`EndpointUnreachable`)
        after ``reconnect_for`` seconds without a connection, or at once with ``resume=False`` or when the very
        first connection fails. :class:`APIRequestFailed` for a filter the server refuses.

        Close the iterator when leaving it early (``contextlib.aclosing``): it holds a connection.
        """
        return event_stream(
            self._transport, self._clock, topics, machine, index, resume=resume, reconnect_for=reconnect_for
        )
