"""The unit actor against the in-memory engine and process runner, in virtual time.

Each test runs the real Executor over FakeRuntime and FakeProcessRunner, so what is checked here is what runs in
production, minus Docker itself (tests/integration/ has the same scenarios on a real engine).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from fleetlet.clock import ManualClock
from fleetlet.exec.fake_runtime import Behaviour, FakeRuntime
from fleetlet.exec.runtime import LABEL_HASH, LABEL_MACHINE, LABEL_REMOVE, LABEL_ROLE, LABEL_UNIT
from fleetlet.exec.status import ExitStatus
from fleetlet.exec.subprocess_runner import FakeBehaviour, FakeProcessRunner
from fleetlet.service.actor import Mailbox, Message, Reload, Restart, Start, Stop
from fleetlet.service.journal import MemoryJournal
from fleetlet.service.states import UnitStatus
from fleetlet.units.check import load_unit
from tests.actor_rig import Running, run_actor
from tests.fleet_units import HELLO_WORLD

pytestmark = pytest.mark.anyio


MACHINE_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f801"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def traps_term(body: Mapping[str, Any]) -> Behaviour:
    """A container that exits 0 on SIGTERM, as a well-behaved service does."""
    return Behaviour(trap={"SIGTERM": 0})


@dataclass
class Rig:
    """The actor over the fakes, and the fakes themselves for the test to drive."""

    clock: ManualClock
    runtime: FakeRuntime
    processes: FakeProcessRunner
    actor: Running

    @property
    def journal(self) -> MemoryJournal:
        assert isinstance(self.actor.journal, MemoryJournal)
        return self.actor.journal

    @property
    def mailbox(self) -> Mailbox:
        return self.actor.mailbox

    async def ask(self, message: Message) -> UnitStatus:
        return await self.actor.ask(message)

    async def status(self) -> UnitStatus:
        return await self.actor.status()

    def messages(self) -> list[str]:
        return self.actor.messages()

    def states(self) -> list[str]:
        return self.actor.states()

    def containers(self) -> list[str | None]:
        return [
            call.args[1] if len(call.args) > 1 else call.options.get("name") for call in self.runtime.called("create")
        ]


@asynccontextmanager
async def rig(
    text: str = HELLO_WORLD,
    name: str = "hello.service",
    *,
    behaviour: Callable[[Mapping[str, Any]], Behaviour] = traps_term,
    processes: FakeProcessRunner | None = None,
    runtime: FakeRuntime | None = None,
    clock: ManualClock | None = None,
) -> AsyncIterator[Rig]:
    clock = clock or ManualClock()
    runtime = runtime or FakeRuntime(clock, behaviour=behaviour)
    processes = processes or FakeProcessRunner(clock=clock)
    async with run_actor(
        text,
        name,
        runtime=runtime,
        processes=processes,
        clock=clock,
        journal=MemoryJournal(name, clock),
        machine_id=MACHINE_ID,
    ) as actor:
        yield Rig(clock, runtime, processes, actor)


async def test_hello_world_starts_and_runs_its_container() -> None:
    async with rig() as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        assert status.result == "success"
        assert [c.method for c in r.runtime.calls if c.method in ("remove", "pull", "create", "start")] == [
            "remove",
            "pull",
            "create",
            "start",
        ]
        create = r.runtime.called("create")[0]
        body = create.args[0]
        assert body["Image"] == "busybox"
        assert body["Cmd"] == ["/bin/sh", "-c", "while true; do echo Hello World; sleep 1; done"]
        assert body["Labels"] == {
            LABEL_UNIT: "hello.service",
            LABEL_HASH: load_unit(HELLO_WORLD, "hello.service").hash,
            LABEL_MACHINE: MACHINE_ID,
            LABEL_ROLE: "main",
            LABEL_REMOVE: "1",
        }
        assert status.container_id is not None
        r.runtime.emit(status.container_id, "stdout", "Hello World")
        await r.clock.settle()
        messages = r.messages()
        assert messages[0] == "Starting HelloWorldApp..."
        assert "Started HelloWorldApp." in messages
        assert "Hello World" in messages
        assert "Error response from daemon: No such container: busybox1" in messages  # the `-` prefixed rm
        assert r.states() == ["activating/start-pre", "activating/start", "active/running"]  # no ExecStartPost


async def test_stop_runs_exec_stop_then_the_container_is_gone() -> None:
    async with rig() as r:
        running = await r.ask(Start())
        stopped = await r.ask(Stop())
        assert stopped.describe() == "loaded inactive dead"
        assert stopped.result == "success"
        assert r.runtime.called("stop")[0].args[0] == "busybox1"
        assert running.container_id is not None
        assert await r.runtime.list({LABEL_UNIT: "hello.service"}) == []  # --rm: removed after it exited
        assert r.states()[-4:] == [
            "active/running",
            "deactivating/stop",
            "deactivating/stop-sigterm",
            "inactive/dead",
        ]  # no ExecStopPost: systemd shows no stop-post state either
        assert "Stopped HelloWorldApp." in r.messages()


async def test_an_unclean_exit_on_stop_fails_the_unit_as_systemd_does() -> None:
    # The default fake container dies of SIGTERM: the engine reports 143, an unclean exit code.
    async with rig(behaviour=lambda body: Behaviour()) as r:
        await r.ask(Start())
        stopped = await r.ask(Stop())
        assert (stopped.describe(), stopped.result) == ("loaded failed failed", "exit-code")
        assert "hello.service: Main process exited, code=exited, status=143/n/a" in r.messages()


FAILING_PRE = """\
[Service]
ExecStartPre=/bin/false
ExecStartPre=/bin/never-reached
ExecStart=/usr/bin/docker run --name web busybox
ExecStop=/bin/stop-hook
ExecStopPost=/bin/cleanup
"""


async def test_a_failing_pre_command_fails_the_unit_and_skips_exec_stop() -> None:
    processes = FakeProcessRunner(
        {
            "/bin/false": FakeBehaviour(exit=ExitStatus.exited(1)),
            "/bin/cleanup": FakeBehaviour(),
            "/bin/stop-hook": FakeBehaviour(),
        }
    )
    async with rig(FAILING_PRE, processes=processes) as r:
        status = await r.ask(Start())
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")
        ran = [p.argv[0] for p in processes.spawned]
        assert ran == ["/bin/false", "/bin/cleanup"]
        assert r.runtime.called("create") == []
        assert "hello.service: Control process exited, code=exited, status=1/FAILURE" in r.messages()


async def test_a_failing_pre_command_with_dash_is_ignored() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/false", FakeBehaviour(exit=ExitStatus.exited(1)))
    async with rig(FAILING_PRE.replace("=/bin/false", "=-/bin/false"), processes=processes) as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        assert [p.argv[0] for p in processes.spawned] == ["/bin/false", "/bin/never-reached"]


async def test_main_exiting_on_its_own_still_runs_exec_stop_then_stop_post() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    async with rig(
        FAILING_PRE.replace("ExecStartPre=/bin/false\nExecStartPre=/bin/never-reached\n", ""), processes=processes
    ) as r:
        status = await r.ask(Start())
        assert status.container_id is not None
        r.runtime.exit(status.container_id, 0)
        await r.clock.settle()
        final = await r.status()
        assert final.describe() == "loaded inactive dead"
        assert [p.argv[0] for p in processes.spawned] == ["/bin/stop-hook", "/bin/cleanup"]
        assert "hello.service: Main process exited, code=exited, status=0/SUCCESS" in r.messages()


RESTARTING = """\
[Unit]
Description=Flaky
StartLimitIntervalSec=10
StartLimitBurst=3

[Service]
Restart=on-failure
RestartSec=1
ExecStart=/usr/bin/docker run --rm --name flaky busybox sh -c "exit 1"
"""


async def test_restart_on_failure_until_the_start_limit() -> None:
    async with rig(RESTARTING, behaviour=lambda body: Behaviour(exit_code=1)) as r:
        first = await r.ask(Start())
        assert first.describe() == "loaded active running"  # Type=simple: started once the container is
        await r.clock.settle()
        times = []
        while (await r.status()).sub == "auto-restart":
            times.append(await r.clock.advance_to_next())
        final = await r.status()
        assert (final.describe(), final.result) == ("loaded failed failed", "start-limit-hit")
        assert times == [1.0, 2.0, 3.0]  # starts at 0, 1 and 2 s; the one due at 3 s would be a fourth in 10 s
        assert len(r.containers()) == 3
        assert final.restarts == 3
        messages = r.messages()
        assert "hello.service: Scheduled restart job, restart counter is at 1." in messages
        assert "hello.service: Start request repeated too quickly." in messages
        assert "Failed to start Flaky." in messages


async def test_a_manual_stop_never_restarts() -> None:
    async with rig(RESTARTING.replace("on-failure", "always"), behaviour=lambda body: Behaviour()) as r:
        await r.ask(Start())
        status = await r.ask(Stop())
        # The container dies of SIGTERM: 143, an unclean exit code, as under systemd; still no restart.
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")
        await r.clock.settle()
        assert r.clock.next_deadline is None
        assert len(r.containers()) == 1


IGNORES_TERM = """\
[Service]
TimeoutStopSec=5
ExecStart=/usr/bin/docker run --rm --name stubborn busybox sleep 1000
"""


async def test_stop_escalates_to_sigkill_after_timeout_stop_sec() -> None:
    async with rig(IGNORES_TERM, behaviour=lambda body: Behaviour(ignore_signals={"SIGTERM", "15"})) as r:
        await r.ask(Start())
        await r.mailbox.send(Stop())
        await r.clock.settle()
        assert (await r.status()).sub == "stop-sigterm"
        assert r.clock.next_deadline == 5.0
        r.clock.advance(5.0)
        await r.clock.settle()
        final = await r.status()
        assert (final.describe(), final.result) == ("loaded failed failed", "timeout")
        kills = [call.options["signal"] for call in r.runtime.called("kill")]
        assert kills == [str(int(signal.SIGTERM)), str(int(signal.SIGKILL))]
        assert "hello.service: State 'stop-sigterm' timed out. Killing." in r.messages()


async def test_a_new_actor_adopts_the_running_container_instead_of_restarting_it() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=traps_term)
    async with rig(runtime=runtime, clock=clock) as r:
        first = await r.ask(Start())
    # The first actor detached (its mailbox closed); its container still runs.
    assert (await runtime.inspect("busybox1")).running
    async with rig(runtime=runtime, clock=clock) as r:
        status = await r.status()
        assert status.describe() == "loaded active running"
        assert status.container_id == first.container_id
        assert len(runtime.called("create")) == 1
        assert f"hello.service: Adopted running container {(first.container_id or '')[:12]}." in r.messages()
        assert (await r.ask(Stop())).describe() == "loaded inactive dead"


async def test_an_engine_restart_is_noticed_and_restart_applies() -> None:
    unit = RESTARTING.replace("on-failure", "always").replace('sh -c "exit 1"', "sleep 1000")
    async with rig(unit, behaviour=lambda body: Behaviour()) as r:
        first = await r.ask(Start())
        r.runtime.restart_engine()
        await r.clock.settle()
        status = await r.status()
        assert (status.active, status.sub) == ("activating", "auto-restart")
        assert status.exit_status == "code=exited, status=143/n/a"
        await r.clock.advance_to_next()
        again = await r.status()
        assert again.describe() == "loaded active running"
        assert again.container_id != first.container_id


ONESHOT = """\
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/setup one
ExecStart=/bin/setup two
ExecStop=/bin/teardown
"""


async def test_oneshot_with_remain_after_exit() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    async with rig(ONESHOT, processes=processes) as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active exited"
        assert [p.argv for p in processes.spawned] == [("/bin/setup", "one"), ("/bin/setup", "two")]
        stopped = await r.ask(Stop())
        assert stopped.describe() == "loaded inactive dead"
        assert processes.spawned[-1].argv == ("/bin/teardown",)


async def test_oneshot_without_remain_after_exit_ends_inactive() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    async with rig(ONESHOT.replace("RemainAfterExit=yes\n", ""), processes=processes) as r:
        status = await r.ask(Start())
        assert (status.describe(), status.result) == ("loaded inactive dead", "success")


SUBPROCESS = """\
[Service]
Environment=GREETING=hello
ExecStart=/bin/sh -c "echo $GREETING ${GREETING}"
ExecReload=/bin/reload-config
"""


async def test_a_subprocess_main_process_and_reload_failure_failing_only_the_reload() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour(exit=None))
    processes.behave("/bin/reload-config", FakeBehaviour(exit=ExitStatus.exited(2)))
    async with rig(SUBPROCESS, processes=processes) as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        main = processes.spawned[0]
        assert main.argv == ("/bin/sh", "-c", "echo $GREETING hello")  # one word: ${} expands inside it
        assert main.env["GREETING"] == "hello"
        assert status.main_pid == main.pid
        after_reload = await r.ask(Reload())
        assert after_reload.describe() == "loaded active running"
        assert "Reload failed for hello.service." in r.messages()
        main.signal(signal.SIGTERM)
        await r.clock.settle()
        assert (await r.status()).describe() == "loaded inactive dead"  # SIGTERM is a clean end for a daemon


LONG_PRE = """\
[Service]
ExecStartPre=/bin/slow-setup
ExecStart=/usr/bin/docker run --name never busybox
ExecStop=/bin/stop-hook
ExecStopPost=/bin/cleanup
"""


async def test_a_stop_during_start_pre_interrupts_it_and_skips_exec_stop() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/slow-setup", FakeBehaviour(exit=None))
    async with rig(LONG_PRE, processes=processes) as r:
        start = Start()
        await r.mailbox.send(start)
        await r.clock.settle()
        assert (await r.status()).sub == "start-pre"
        stopped = await r.ask(Stop())
        assert (stopped.describe(), stopped.result) == ("loaded inactive dead", "success")
        assert [p.argv[0] for p in processes.spawned] == ["/bin/slow-setup", "/bin/cleanup"]
        assert not processes.spawned[0].running
        assert r.runtime.called("create") == []
        assert (await start.reply.wait()).describe() == "loaded inactive dead"


async def test_start_timeout_fails_the_unit() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/slow-setup", FakeBehaviour(exit=None))
    async with rig(LONG_PRE.replace("[Service]\n", "[Service]\nTimeoutStartSec=30\n"), processes=processes) as r:
        await r.mailbox.send(Start())
        await r.clock.settle()
        assert r.clock.next_deadline == 30.0
        r.clock.advance(30)
        await r.clock.settle()
        status = await r.status()
        assert (status.describe(), status.result) == ("loaded failed failed", "timeout")
        assert "hello.service: start-pre operation timed out. Terminating." in r.messages()


async def test_restart_message_stops_then_starts() -> None:
    async with rig() as r:
        first = await r.ask(Start())
        again = await r.ask(Restart())
        assert again.describe() == "loaded active running"
        assert again.container_id != first.container_id
        assert again.restarts == 0


async def test_start_of_a_running_unit_changes_nothing() -> None:
    async with rig() as r:
        first = await r.ask(Start())
        second = await r.ask(Start())
        assert second.container_id == first.container_id
        assert len(r.runtime.called("create")) == 1


async def test_a_unit_after_docker_waits_for_the_engine_to_answer() -> None:
    async with rig() as r:
        r.runtime.unavailable = True
        await r.mailbox.send(Start())
        await r.clock.settle()
        assert (await r.status()).sub == "start-pre"
        assert r.runtime.called("create") == []
        assert r.clock.next_deadline == 0.5
        await r.clock.advance_to_next()
        assert r.clock.next_deadline == 1.5  # backing off: 0.5 s, then 1 s
        r.runtime.unavailable = False
        await r.clock.advance_to_next()
        assert (await r.status()).describe() == "loaded active running"
        messages = r.messages()
        assert any(m.startswith("hello.service: Waiting for the Docker engine: ") for m in messages)
        assert "hello.service: The Docker engine answers." in messages


async def test_a_stopped_leftover_container_of_the_unit_does_not_block_its_name() -> None:
    # An engine that went down after stopping a --rm container but before its removal leaves it behind, stopped.
    unit = RESTARTING.replace('sh -c "exit 1"', "sleep 1000")
    async with rig(unit, behaviour=lambda body: Behaviour()) as r:
        old_hash = "0" * 40  # left by an older version of the unit: still ours
        labels = {LABEL_UNIT: "hello.service", LABEL_HASH: old_hash, LABEL_MACHINE: MACHINE_ID, LABEL_ROLE: "main"}
        leftover = await r.runtime.create({"Image": "busybox", "Labels": labels}, "flaky")
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        assert [c.id for c in await r.runtime.list()] == [status.container_id]
        assert f"Removing leftover container flaky ({leftover[:12]}, created) of this unit" in r.messages()


async def test_a_container_of_another_owner_keeps_its_name() -> None:
    async with rig(RESTARTING.replace('sh -c "exit 1"', "sleep 1000"), behaviour=lambda body: Behaviour()) as r:
        stranger = await r.runtime.create({"Image": "busybox", "Labels": {"owner": "someone else"}}, "flaky")
        status = await r.ask(Start())
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")  # the start job failed
        assert (await r.runtime.inspect("flaky")).id == stranger
        assert any("Conflict. The container name" in m for m in r.messages())


# --- edge cases: engine failures, messages crossing, systemd's rules for each phase ------------------------------

DOCKER_PRE = """\
[Service]
ExecStartPre=/usr/bin/docker run --rm --name prepare busybox sleep 1000
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
"""


async def test_the_engine_failing_mid_command_fails_the_unit_not_the_actor() -> None:
    async with rig(DOCKER_PRE) as r:
        start = Start()
        await r.mailbox.send(start)
        await r.clock.settle()
        r.runtime.unavailable = True  # the wait on the prepare container breaks
        await r.clock.settle()
        r.runtime.unavailable = False
        status = await start.reply.wait()
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")
        assert "hello.service: Control process exited, code=exited, status=125/n/a" in r.messages()
        assert (await r.status()).describe() == "loaded failed failed"  # the actor still answers


async def test_detaching_answers_every_pending_reply() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/slow-setup", FakeBehaviour(exit=None))
    async with rig(LONG_PRE, processes=processes) as r:
        start = Start()
        await r.mailbox.send(start)
        await r.clock.settle()
        await r.mailbox.aclose()
        with anyio.fail_after(5):
            status = await start.reply.wait()
        assert status.sub == "start-pre"


SLOW_STOP = """\
[Service]
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
ExecStop=/bin/slow-stop
"""


async def test_a_start_while_the_unit_stops_by_itself_starts_it_again_afterwards() -> None:
    processes = FakeProcessRunner()
    processes.behave("/bin/slow-stop", FakeBehaviour(exit=None))
    async with rig(SLOW_STOP, processes=processes) as r:
        first = await r.ask(Start())
        assert first.container_id is not None
        r.runtime.exit(first.container_id, 0)
        await r.clock.settle()
        assert (await r.status()).sub == "stop"
        start = Start()
        await r.mailbox.send(start)
        await r.clock.settle()
        processes.spawned[0].finish(0)
        status = await start.reply.wait()
        assert status.describe() == "loaded active running"
        assert status.container_id != first.container_id


async def test_a_container_of_the_same_unit_on_another_machine_is_not_adopted() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=traps_term)
    labels = {
        LABEL_UNIT: "hello.service",
        LABEL_HASH: load_unit(HELLO_WORLD, "hello.service").hash,
        LABEL_MACHINE: "another-machine",
        LABEL_ROLE: "main",
    }
    theirs = await runtime.create({"Image": "busybox", "Labels": labels}, "busybox1")
    await runtime.start(theirs)
    async with rig(runtime=runtime, clock=clock) as r:
        assert (await r.status()).describe() == "loaded inactive dead"
    assert (await runtime.inspect(theirs)).running


async def test_an_older_version_of_the_unit_is_replaced_not_adopted() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=traps_term)
    labels = {LABEL_UNIT: "hello.service", LABEL_HASH: "0" * 40, LABEL_MACHINE: MACHINE_ID, LABEL_ROLE: "main"}
    old = await runtime.create({"Image": "busybox", "Labels": labels}, "busybox1")
    await runtime.start(old)
    async with rig(runtime=runtime, clock=clock) as r:
        assert (await r.status()).describe() == "loaded inactive dead"
        assert [c.id for c in await runtime.list()] == []
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        assert any(
            m.startswith("hello.service: Removing running container of an older version busybox1") for m in r.messages()
        )


async def test_an_adopted_rm_container_is_removed_after_its_stop() -> None:
    clock = ManualClock()
    runtime = FakeRuntime(clock, behaviour=traps_term)
    async with rig(runtime=runtime, clock=clock) as r:
        await r.ask(Start())
    async with rig(runtime=runtime, clock=clock) as r:
        assert (await r.ask(Stop())).describe() == "loaded inactive dead"
    assert await runtime.list() == []


RELOADABLE = """\
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/setup
ExecReload=/bin/slow-reload
"""


async def test_reload_works_in_the_exited_state_and_a_stop_cancels_it() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/slow-reload", FakeBehaviour(exit=None))
    async with rig(RELOADABLE, processes=processes) as r:
        assert (await r.ask(Start())).describe() == "loaded active exited"
        reload = Reload()
        await r.mailbox.send(reload)
        await r.clock.settle()
        assert (await r.status()).describe() == "loaded reloading reload"
        reloader = processes.spawned[-1]
        stopped = await r.ask(Stop())
        assert stopped.describe() == "loaded inactive dead"
        assert not reloader.running
        assert (await reload.reply.wait()).describe() == "loaded inactive dead"
        assert "hello.service: Reload cancelled by a stop." in r.messages()


async def test_a_successful_reload_returns_to_where_it_was() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    async with rig(RELOADABLE, processes=processes) as r:
        await r.ask(Start())
        assert (await r.ask(Reload())).describe() == "loaded active exited"
        assert "Reloaded hello.service." in r.messages()


START_POST_FAILS = """\
[Service]
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
ExecStartPost=/bin/false
ExecStop=/bin/stop-hook
ExecStopPost=/bin/cleanup
"""


async def test_a_failing_start_post_skips_exec_stop_and_ends_the_main_process() -> None:
    processes = FakeProcessRunner(default=FakeBehaviour())
    processes.behave("/bin/false", FakeBehaviour(exit=ExitStatus.exited(1)))
    async with rig(START_POST_FAILS, processes=processes) as r:
        status = await r.ask(Start())
        assert (status.describe(), status.result) == ("loaded failed failed", "exit-code")
        assert [p.argv[0] for p in processes.spawned] == ["/bin/false", "/bin/cleanup"]
        assert await r.runtime.list() == []


async def test_a_stop_during_auto_restart_ends_inactive() -> None:
    async with rig(RESTARTING, behaviour=lambda body: Behaviour(exit_code=1)) as r:
        await r.ask(Start())
        await r.clock.settle()
        assert (await r.status()).sub == "auto-restart"
        stopped = await r.ask(Stop())
        assert (stopped.describe(), stopped.restarts) == ("loaded inactive dead", 0)


async def test_kill_mode_none_leaves_the_container_to_exec_stop() -> None:
    unit = IGNORES_TERM.replace("[Service]\n", "[Service]\nKillMode=none\n")
    async with rig(unit, behaviour=lambda body: Behaviour(ignore_signals={"SIGTERM", "15"})) as r:
        await r.ask(Start())
        stopped = await r.ask(Stop())  # no wait for TimeoutStopSec: nothing is signalled
        assert stopped.describe() == "loaded inactive dead"
        assert r.runtime.called("kill") == []
        assert (await r.runtime.inspect("stubborn")).running


FORKING = """\
[Service]
Type=forking
ExecStart=/usr/bin/docker run -d --name daemon busybox sleep 1000
"""


async def test_forking_with_docker_run_detached_supervises_the_container() -> None:
    async with rig(FORKING) as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        assert status.exit_status is None
        assert status.container_id == (await r.runtime.inspect("daemon")).id
        assert not any("Main process exited" in m for m in r.messages())


async def test_a_missing_environment_file_fails_the_command() -> None:
    unit = "[Service]\nEnvironmentFile=/nonexistent/env\nExecStart=/bin/server\n"
    processes = FakeProcessRunner(default=FakeBehaviour(exit=None))
    async with rig(unit, processes=processes) as r:
        status = await r.ask(Start())
        assert (status.describe(), status.result) == ("loaded failed failed", "resources")
        assert processes.spawned == []
        assert any(
            m.startswith("hello.service: Failed to load environment file /nonexistent/env") for m in r.messages()
        )


TWO_SLOW_PRES = """\
[Service]
TimeoutStartSec=30
ExecStartPre=/bin/setup one
ExecStartPre=/bin/setup two
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
"""


async def test_the_start_timeout_is_rearmed_for_each_command() -> None:
    clock = ManualClock()
    processes = FakeProcessRunner(default=FakeBehaviour(exit=ExitStatus.exited(0), after=20), clock=clock)
    async with rig(TWO_SLOW_PRES, processes=processes, clock=clock) as r:
        await r.mailbox.send(Start())
        assert await r.clock.advance_to_next() == 20
        assert await r.clock.advance_to_next() == 40  # 40 s in all, each command well inside its 30 s
        assert (await r.status()).describe() == "loaded active running"


QUADLET = """\
[Unit]
Description=Web from a [Container] section

[Container]
Image=busybox
Exec=httpd -f -p 8080
ContainerName=web
PublishPort=127.0.0.1:8080:8080
Environment=MODE=production

[Service]
Restart=on-failure
"""


async def test_a_container_section_runs_without_exec_lines() -> None:
    async with rig(QUADLET, "web.service") as r:
        status = await r.ask(Start())
        assert status.describe() == "loaded active running"
        body = r.runtime.called("create")[0].args[0]
        assert body["Image"] == "busybox"
        assert body["Cmd"] == ["httpd", "-f", "-p", "8080"]
        assert "MODE=production" in body["Env"]
        assert body["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
        assert (await r.runtime.inspect("web")).id == status.container_id
        stopped = await r.ask(Stop())
        assert stopped.describe() == "loaded inactive dead"
        assert await r.runtime.list() == []  # removed after it ended, as Quadlet's --rm does


async def test_an_oom_kill_fails_the_unit_with_its_own_result() -> None:
    async with rig(RESTARTING.replace('sh -c "exit 1"', "sleep 1000"), behaviour=lambda body: Behaviour()) as r:
        status = await r.ask(Start())
        assert status.container_id is not None
        r.runtime.exit(status.container_id, 137, oom=True)
        await r.clock.settle()
        after = await r.status()
        assert (after.sub, after.result) == ("auto-restart", "oom-kill")  # on-failure restarts after an OOM kill
        assert "hello.service: A process of this unit has been killed by the OOM killer." in r.messages()


async def test_a_restart_during_auto_restart_starts_at_once() -> None:
    async with rig(RESTARTING, behaviour=lambda body: Behaviour(exit_code=1)) as r:
        await r.ask(Start())
        await r.clock.settle()
        assert (await r.status()).sub == "auto-restart"
        restart = Restart()
        await r.mailbox.send(restart)
        await r.clock.settle()
        assert len(r.containers()) == 2  # started again without waiting for RestartSec
        assert (await restart.reply.wait()).describe() == "loaded active running"  # answered once it ran


EXEC_STOP_HANGS = """\
[Service]
TimeoutStopSec=20
ExecStart=/usr/bin/docker run --rm --name web busybox sleep 1000
ExecStop=/bin/hanging-stop
"""


async def test_an_exec_stop_that_hangs_times_out_and_the_container_is_still_stopped() -> None:
    processes = FakeProcessRunner()
    processes.behave("/bin/hanging-stop", FakeBehaviour(exit=None))
    async with rig(EXEC_STOP_HANGS, processes=processes) as r:
        await r.ask(Start())
        await r.mailbox.send(Stop())
        await r.clock.settle()
        assert (await r.status()).sub == "stop"
        assert r.clock.next_deadline == 20.0
        r.clock.advance(20)
        await r.clock.settle()
        final = await r.status()
        assert (final.describe(), final.result) == ("loaded failed failed", "timeout")
        assert not processes.spawned[0].running  # the hanging ExecStop was killed
        assert await r.runtime.list() == []  # and the container stopped (SIGTERM, trapped) and removed
        assert "hello.service: stop operation timed out. Terminating." in r.messages()


async def test_timeout_stop_sec_infinity_waits_for_ever_for_sigterm() -> None:
    unit = IGNORES_TERM.replace("TimeoutStopSec=5", "TimeoutStopSec=infinity")
    async with rig(unit, behaviour=lambda body: Behaviour(ignore_signals={"SIGTERM", "15"})) as r:
        status = await r.ask(Start())
        await r.mailbox.send(Stop())
        await r.clock.settle()
        assert (await r.status()).sub == "stop-sigterm"
        assert r.clock.next_deadline is None  # nothing will ever escalate to SIGKILL
        assert status.container_id is not None
        r.runtime.exit(status.container_id, 0)
        await r.clock.settle()
        assert (await r.status()).describe() == "loaded inactive dead"
