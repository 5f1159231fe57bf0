"""Container deaths from one ``/events`` subscription for the whole agent, instead of a wait call per container.

A wait call holds an HTTP connection open for each running container: thousands of units would mean thousands
of connections. :class:`EngineEvents` keeps a single subscription and hands each death (``die``, with the
``oom`` before it, or ``destroy``) to whoever watches that container.

No death is lost to an engine outage. After the stream breaks the hub waits for the engine, subscribes again from
the time of the last event it saw, so that the engine replays what happened meanwhile, and inspects every watched
container, for what the replay cannot hold: a restarted daemon has forgotten its predecessor's events.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from fleetlet.clock import Clock
from fleetlet.exec.runtime import ContainerEvent, ContainerRuntime, EngineUnavailable, NoSuchContainer, RuntimeFailure

# Backoff while waiting for an engine that went away (daemon restart) to answer again.
ENGINE_RETRY_FIRST = 0.5
ENGINE_RETRY_MAX = 5.0
# The exit code of a container killed by SIGKILL (128+9): the OOM killer's, among others.
SIGKILLED = 137
# What a container that vanished with the engine is taken to have died of: SIGKILL.
VANISHED = SIGKILLED
# Waiting tasks park on a few shared bells rather than on an event each: on asyncio an event costs about 1 KiB (its
# waiter deque), more than all the rest of a watcher. A death rings its container's bell, waking the few waiters
# that share it, and each looks whether its own container ended.
_BELLS = 64
# Inspections at once when reconciling after an outage: enough to get through thousands of containers in seconds,
# few enough not to swamp a daemon that has just come back.
_RECONCILE_CONCURRENCY = 8


class ContainerDeath:
    """The end of one container, as one watcher awaits it; :meth:`close` when no longer interested.

    Small and slotted, without an event of its own: an agent holds one per running unit.
    """

    __slots__ = ("_hub", "container_id", "exit_code", "oom_killed")

    def __init__(self, hub: EngineEvents, container_id: str) -> None:
        self._hub = hub
        self.container_id = container_id
        self.exit_code: int | None = None  # set once it ended
        self.oom_killed = False

    @property
    def ended(self) -> bool:
        return self.exit_code is not None

    async def wait(self) -> None:
        """Until the container has ended; at once if it already has."""
        if self.exit_code is not None:
            await anyio.lowlevel.checkpoint()
        while self.exit_code is None:  # a bell rings for every container that shares it
            await self._hub._bell(self.container_id).wait()

    def close(self) -> None:
        """Stop watching (idempotent). A task still in :meth:`wait` then waits for ever: close after waiting."""
        self._hub._forget(self)

    def _resolve(self, exit_code: int, *, oom_killed: bool = False) -> None:
        if self.exit_code is not None:
            return  # the first word on a death is the one that counts: a replayed event says it again
        self.exit_code = exit_code
        self.oom_killed = self.oom_killed or oom_killed

    def __repr__(self) -> str:
        return f"<ContainerDeath {self.container_id[:12]} exit_code={self.exit_code} oom_killed={self.oom_killed}>"


class EngineEvents:
    """One event subscription fanned out to the watchers of each container. Run it with ``await tg.start(hub.run)``.

    Register before looking: :meth:`death_of` watches a container and then inspects it once, so a death falls
    either before the inspection (which sees it) or after the registration (which the stream delivers).
    """

    __slots__ = ("_bells", "_clock", "_runtime", "_since", "_tg", "_watchers")

    def __init__(self, runtime: ContainerRuntime, clock: Clock) -> None:
        self._runtime = runtime
        self._clock = clock
        # Watchers by container id; a container has one watcher, rarely more, and none once it ended.
        self._watchers: dict[str, list[ContainerDeath]] = {}
        # Where a subscription starts: the time of the last event seen, and at first the hub's creation, so that a
        # container watched before the stream connects cannot die unseen.
        self._since = clock.time()
        self._bells: list[anyio.Event | None] = [None] * _BELLS  # made when someone waits, dropped when rung
        self._tg: TaskGroup | None = None  # the current subscription's, for the inspections a death may need

    @property
    def watched(self) -> int:
        """How many containers someone waits on."""
        return len(self._watchers)

    def watch(self, container_id: str) -> ContainerDeath:
        """Register interest in a container's death. Check its current state afterwards, or use :meth:`death_of`."""
        death = ContainerDeath(self, container_id)
        self._watchers.setdefault(container_id, []).append(death)
        return death

    async def death_of(self, container_id: str) -> ContainerDeath:
        """Watch a container, then inspect it once: ended already if it no longer runs or no longer exists.

        RuntimeFailure if the engine cannot say (nothing stays registered then).
        """
        death = self.watch(container_id)
        watching = False
        try:
            try:
                state = await self._runtime.inspect(container_id)
            except NoSuchContainer:
                self._end(container_id, VANISHED)
            else:
                if not state.running:
                    self._end(container_id, state.exit_code, oom_killed=state.oom_killed)
            watching = True
            return death
        finally:
            if not watching:  # failed or cancelled: whoever asked will ask again
                death.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the subscription going for as long as the agent runs; ready once the first one is asked for."""
        task_status.started()
        reconcile = False  # nothing can have been missed before the first subscription, which starts at _since
        while True:
            failure = await self._subscribe(reconcile=reconcile)
            reconcile = True
            if not isinstance(failure, EngineUnavailable):
                await self._clock.sleep(ENGINE_RETRY_MAX)  # an odd answer: ask again a little later, not at once
            await until_engine_answers(self._runtime, self._clock)

    async def _subscribe(self, *, reconcile: bool) -> RuntimeFailure | None:
        """One subscription until it breaks, with a reconciliation beside it after an outage; why it ended."""
        failure: RuntimeFailure | None = None
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if reconcile:
                # Beside the subscription, not before it: a death after an inspection is in the replay.
                tg.start_soon(self._reconcile)
            try:
                await self._runtime.watch_events(self._deliver, since=self._since)
            except RuntimeFailure as e:
                failure = e
            tg.cancel_scope.cancel()  # a reconciliation still going is redone after the next subscription
        self._tg = None
        return failure

    def _deliver(self, event: ContainerEvent) -> None:
        self._since = event.time
        watchers = self._watchers.get(event.container_id)
        if watchers is None:
            return
        if event.action == "oom":  # the kernel's verdict comes before the die that follows it
            for death in watchers:
                death.oom_killed = True
        elif event.action == "die":
            if event.exit_code == SIGKILLED and not any(d.oom_killed for d in watchers) and self._tg is not None:
                # The engine may report the OOM kill after the die: the container's state says for certain.
                self._tg.start_soon(self._end_as_inspected, event.container_id)
                return
            self._end(event.container_id, VANISHED if event.exit_code is None else event.exit_code)
        elif event.action == "destroy":  # removed without a die seen: gone with the engine, or its end missed
            self._end(event.container_id, VANISHED)

    async def _end_as_inspected(self, container_id: str) -> None:
        """End a container killed by SIGKILL as its state tells, OOM kill included; a failed look ends it as is."""
        try:
            state = await self._runtime.inspect(container_id)
        except NoSuchContainer:
            self._end(container_id, SIGKILLED)  # removed at once (--rm): the die said how it ended
        except RuntimeFailure:
            return  # the engine went: the stream breaks, and the reconciliation after it inspects again
        else:
            self._end(container_id, state.exit_code, oom_killed=state.oom_killed)

    def _end(self, container_id: str, exit_code: int, *, oom_killed: bool = False) -> None:
        """Resolve every watcher of the container and forget them: a death is final."""
        watchers = self._watchers.pop(container_id, None)
        if watchers is None:
            return
        for death in watchers:
            death._resolve(exit_code, oom_killed=oom_killed)
        bell = hash(container_id) % _BELLS
        if (ringing := self._bells[bell]) is not None:
            self._bells[bell] = None  # whoever still waits after this waits on a new one
            ringing.set()

    def _bell(self, container_id: str) -> anyio.Event:
        bell = hash(container_id) % _BELLS
        event = self._bells[bell]
        if event is None:
            event = self._bells[bell] = anyio.Event()
        return event

    def _forget(self, death: ContainerDeath) -> None:
        watchers = self._watchers.get(death.container_id)
        if watchers is None or death not in watchers:
            return
        watchers.remove(death)
        if not watchers:
            del self._watchers[death.container_id]

    async def _reconcile(self) -> None:
        """Inspect every watched container: the ones that ended while the stream was down are resolved."""
        pending = iter(list(self._watchers))  # shared by the workers; next() never yields to another task

        async def worker() -> None:
            for container_id in pending:
                if container_id not in self._watchers:
                    continue  # ended or forgotten meanwhile
                try:
                    state = await self._runtime.inspect(container_id)
                except NoSuchContainer:
                    self._end(container_id, VANISHED)
                except RuntimeFailure:
                    continue  # the engine went again: the stream breaks, and the next reconciliation retries
                else:
                    if not state.running:
                        self._end(container_id, state.exit_code, oom_killed=state.oom_killed)

        async with anyio.create_task_group() as tg:
            for _ in range(_RECONCILE_CONCURRENCY):
                tg.start_soon(worker)


async def until_engine_answers(runtime: ContainerRuntime, clock: Clock) -> None:
    """Ping the engine, backing off from 0.5 s to 5 s between tries, until it answers."""
    delay = ENGINE_RETRY_FIRST
    while True:
        try:
            await runtime.ping()
            return
        except RuntimeFailure:
            await clock.sleep(delay)
            delay = min(delay * 2, ENGINE_RETRY_MAX)
