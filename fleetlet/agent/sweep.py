"""The sweep at agent start: containers this machine's agent made for units it no longer has.

An agent that was killed (or stopped without ``--purge``) leaves its containers running, for the next agent to
adopt. Units destroyed, unloaded or moved away in the meantime have no actor to adopt theirs: once the first
reconcile pass has loaded every unit that belongs here, whatever is labelled with this machine and claimed by no
loaded unit is an orphan. It is stopped (SIGTERM, then SIGKILL after the grace period, as ``docker stop``) and
removed. Containers of ``fleetlet run`` carry another owner label and are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fleetlet.exec.runtime import LABEL_MACHINE, LABEL_UNIT, ContainerRuntime, NoSuchContainer, RuntimeFailure

log = logging.getLogger("fleetlet.agent")

# docker stop's default grace period, in seconds.
STOP_GRACE = 10.0


async def sweep_orphans(runtime: ContainerRuntime, owner: str, is_loaded: Callable[[str], bool]) -> list[str]:
    """Stop and remove ``owner``'s containers whose unit is not loaded; returns the units they were for.

    Whether a unit is loaded is asked per container, at the moment of deciding: a unit the reconciler loads while
    the sweep runs keeps its container. One container's trouble is logged and does not stop the sweep.
    """
    swept: list[str] = []
    for container in await runtime.list({LABEL_MACHINE: owner}):
        unit = container.labels.get(LABEL_UNIT, "")
        if is_loaded(unit):
            continue
        log.warning("removing container %s: unit %s is not loaded on this machine", container.name, unit or "?")
        try:
            if container.running:
                await runtime.stop(container.id, timeout=STOP_GRACE)
            await runtime.remove(container.id, force=True)
        except NoSuchContainer:
            pass  # gone by itself (--rm) meanwhile
        except RuntimeFailure as exc:
            log.warning("could not remove container %s: %s", container.id[:12], exc)
            continue
        swept.append(unit)
    return swept
