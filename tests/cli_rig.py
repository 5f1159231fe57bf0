"""The CLI's tests: the API served on a real unix socket, and the CLI run against it as a user types it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import pytest
from aiohttp import web

from fleetlet.cli.main import main

Run = tuple[int, str, str]  # exit status, stdout, stderr
Fleetctl = Callable[..., Awaitable[Run]]


@asynccontextmanager
async def served(app: web.Application, directory: Path) -> AsyncIterator[str]:
    """Serve ``app`` on ``directory/api.sock``; yield its ``unix://`` endpoint."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(directory / "api.sock")).start()
        yield f"unix://{directory / 'api.sock'}"
    finally:
        await runner.cleanup()


def cli(endpoint: str, capsys: pytest.CaptureFixture[str]) -> Fleetctl:
    """Run ``fleetlet ARGS... --endpoint ENDPOINT`` in a worker thread (it runs its own event loop)."""

    async def run(*args: str) -> Run:
        capsys.readouterr()
        status = await anyio.to_thread.run_sync(main, [*args, "--endpoint", endpoint])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run
