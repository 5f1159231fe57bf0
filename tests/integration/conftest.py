"""Fixtures for tests against real services. ``make services`` (scripts/services.sh) starts them.

A missing engine fails these tests rather than skipping them: CI must never pass without having run them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from fleetlet.exec.docker_runtime import DEFAULT_HOST, DockerRuntime
from fleetlet.exec.runtime import NoSuchContainer, RuntimeFailure
from tests.runtime_contract import Harness

ROOT = Path(__file__).resolve().parents[2]
# The label every test container carries, so `docker ps -a --filter label=fleetlet.test` finds strays.
TEST_LABEL = "fleetlet.test"


def docker_host() -> str:
    """``DOCKER_HOST`` from the environment, else from the .services.env that scripts/services.sh writes."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    env_file = ROOT / ".services.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "DOCKER_HOST" and value.strip():
                return value.strip()
    return DEFAULT_HOST


@pytest.fixture(scope="session")
def docker_url() -> str:
    url = docker_host()

    async def ping() -> None:
        with anyio.fail_after(10):
            async with DockerRuntime(url) as runtime:
                await runtime.ping()

    try:
        anyio.run(ping)
    except (RuntimeFailure, TimeoutError) as exc:
        problem = exc
    else:
        return url
    pytest.fail(f"no Docker engine answers at {url}: {problem or 'no answer in 10 s'}. Start one with `make services`.")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def docker(docker_url: str) -> AsyncIterator[DockerRuntime]:
    async with DockerRuntime(docker_url) as runtime:
        yield runtime


@pytest.fixture
async def container_labels(docker_url: str) -> AsyncIterator[dict[str, str]]:
    """Labels for the containers a test creates; every container carrying them is removed afterwards."""
    labels = {TEST_LABEL: "1", f"{TEST_LABEL}.id": uuid.uuid4().hex[:12]}
    try:
        yield labels
    finally:
        with anyio.fail_after(60, shield=True):
            async with DockerRuntime(docker_url) as cleaner:
                for state in await cleaner.list(labels):
                    try:
                        await cleaner.remove(state.id, force=True, volumes=True)
                    except NoSuchContainer:
                        pass


@pytest.fixture
async def harness(docker: DockerRuntime, container_labels: dict[str, str]) -> Harness:
    async def real_time(seconds: float) -> None:
        """Nothing to do: the engine's time passes by itself."""

    return Harness(docker, advance=real_time, now=time.time, labels=container_labels)
