"""The container runtime on a real Docker engine, through aiodocker.

aiodocker supplies the connection (unix socket, TCP, TLS, ssh), the API version negotiation and the decoding of
error responses. The requests themselves are written here with the Engine API's own paths and JSON, because
aiodocker's wrappers drop what supervision needs (the 304 of a stop, which stream a log frame came from), run the
event stream in a detached task, and leave a response open when the call is cancelled. Every response here is
released on the way out, so a cancelled call leaves no connection behind.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import os
import struct
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, Self

import aiodocker
import aiohttp
import anyio
import orjson
from aiodocker.exceptions import DockerError

from fleetlet.exec.runtime import (
    ContainerEvent,
    ContainerState,
    EngineUnavailable,
    EventSink,
    LogLine,
    LogSink,
    NameConflict,
    NoSuchContainer,
    NoSuchImage,
    ProgressSink,
    RuntimeFailure,
    Stream,
)

DEFAULT_HOST = "unix:///var/run/docker.sock"

# aiodocker reports "could not connect at all" as this pseudo HTTP status.
_NO_CONNECTION = 900
# Keys the engine puts in an event's actor attributes beside the container's labels.
_ENGINE_ATTRIBUTES = frozenset({"image", "name", "exitCode", "signal", "execID", "execDuration"})
# A frame of a multiplexed stream: stream number (1 stdout, 2 stderr), 3 bytes padding, payload length.
_FRAME = struct.Struct(">BxxxL")


def docker_host(url: str | None = None) -> str:
    """The engine to talk to: ``url`` if given, else ``DOCKER_HOST``, else the default socket."""
    return url or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


@contextmanager
def engine_errors(*, container: str | None = None, image: str | None = None, name: str | None = None) -> Iterator[None]:
    """Turn aiodocker's and aiohttp's errors into fleetlet's, naming what the call was about.

    The engine answers 404 and 409 for several reasons, so its message decides which error it is.
    """
    try:
        yield
    except DockerError as exc:
        raise _failure(exc.status, str(exc.message), container=container, image=image, name=name) from exc
    except TimeoutError:
        raise
    except (aiohttp.ClientError, OSError) as exc:  # the connection broke after the request was answered
        raise EngineUnavailable(f"lost the connection to the Docker engine: {exc}") from exc


def _failure(
    status: int, message: str, *, container: str | None, image: str | None, name: str | None
) -> RuntimeFailure:
    lowered = message.lower()
    if status == _NO_CONNECTION:
        return EngineUnavailable(message)
    if status == 404 and container is not None and "no such container" in lowered:
        return NoSuchContainer(container)
    if status == 404 and image is not None and "no such image" in lowered:
        return NoSuchImage(image)
    if status == 409 and name is not None and "already in use" in lowered:
        return NameConflict(name)
    return RuntimeFailure(message, status)


class DockerRuntime:
    """:class:`~fleetlet.exec.runtime.ContainerRuntime` on a Docker engine. Use as ``async with DockerRuntime():``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = docker_host(url)
        self._docker: aiodocker.Docker | None = None
        self._connector: aiohttp.BaseConnector | None = None

    async def __aenter__(self) -> Self:
        self._client()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session; shielded, so a cancelled owner still releases its connections."""
        docker, self._docker = self._docker, None
        connector, self._connector = self._connector, None
        with anyio.move_on_after(5, shield=True):
            if docker is not None:
                await docker.close()
            if connector is not None:
                await connector.close()

    def _client(self) -> aiodocker.Docker:
        # Created on first use, inside the event loop, as aiohttp requires.
        if self._docker is None:
            if self.url.startswith("unix://"):
                # Every running unit holds a connection or two open for long (its wait call, its logs); aiohttp's
                # default pool of 100 would make the 51st unit's requests queue behind them. A local socket needs
                # no cap.
                self._connector = aiohttp.UnixConnector(self.url.removeprefix("unix://"), limit=0)
                self._docker = aiodocker.Docker(url="unix://localhost", connector=self._connector)
            else:
                self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        versioned: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One Engine API request whose response is released however the caller leaves (a cancel included)."""
        docker = self._client()
        if versioned and docker.api_version == "auto":
            # Negotiated here rather than by aiodocker, whose own request for it is not released when cancelled.
            async with self._request("GET", "version", versioned=False) as response:
                docker.api_version = f"v{orjson.loads(await response.read())['ApiVersion']}"
        data = None if body is None else orjson.dumps(body, default=_plain)
        query = docker._query(path, method, params=params, data=data, timeout=None, versioned_api=versioned)
        async with query as response:
            try:
                yield response
            finally:
                response.release()

    async def _json(self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None) -> Any:
        async with self._request(method, path, params=params, body=body) as response:
            return orjson.loads(await response.read())

    async def ping(self) -> None:
        with engine_errors():
            async with self._request("GET", "_ping", versioned=False) as response:
                await response.read()

    async def create(self, body: Mapping[str, Any], name: str | None = None) -> str:
        params = {"name": name} if name else None
        with engine_errors(image=str(body.get("Image", "")), name=name):
            created = await self._json("POST", "containers/create", params=params, body=body)
        return str(created["Id"])

    async def start(self, container: str) -> None:
        with engine_errors(container=container):
            async with self._request("POST", f"containers/{container}/start"):
                pass  # 204 started, 304 already running

    async def wait(self, container: str) -> int:
        with engine_errors(container=container):
            result = await self._json("POST", f"containers/{container}/wait", params={"condition": "not-running"})
        error = (result.get("Error") or {}).get("Message")
        if error:
            raise RuntimeFailure(f"waiting for {container}: {error}")
        return int(result["StatusCode"])

    async def stop(self, container: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (grace period)
        # The engine takes whole seconds; round up so a container never gets less grace than asked.
        params = None if timeout is None else {"t": str(math.ceil(timeout))}
        with engine_errors(container=container):
            async with self._request("POST", f"containers/{container}/stop", params=params) as response:
                return response.status != 304

    async def kill(self, container: str, signal: str = "SIGKILL") -> None:
        with engine_errors(container=container):
            async with self._request("POST", f"containers/{container}/kill", params={"signal": signal}):
                pass

    async def remove(self, container: str, *, force: bool = False, volumes: bool = False) -> None:
        """Remove the container; one whose removal is already under way (``--rm`` as it ends) counts as removed."""
        params = {"force": _flag(force), "v": _flag(volumes)}
        try:
            with engine_errors(container=container):
                async with self._request("DELETE", f"containers/{container}", params=params):
                    pass
        except RuntimeFailure as exc:
            if exc.status != 409 or "already in progress" not in str(exc):
                raise

    async def inspect(self, container: str) -> ContainerState:
        return _state(await self.inspect_raw(container))

    async def inspect_raw(self, container: str) -> dict[str, Any]:
        with engine_errors(container=container):
            raw: dict[str, Any] = await self._json("GET", f"containers/{container}/json")
        return raw

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerState]:
        params = {"all": "1"}
        if labels:
            params["filters"] = _dumps({"label": [f"{key}={value}" for key, value in labels.items()]})
        with engine_errors():
            summaries = await self._json("GET", "containers/json", params=params)
        # The summaries lack the exit code, pid and OOM flag, so each container is inspected.
        states = []
        for summary in summaries:
            try:
                states.append(await self.inspect(summary["Id"]))
            except NoSuchContainer:
                continue  # removed since the listing
        return states

    async def image_present(self, image: str) -> bool:
        try:
            with engine_errors(image=image):
                async with self._request("GET", f"images/{image}/json"):
                    return True
        except NoSuchImage:
            return False

    async def pull(self, image: str, tag: str, progress: ProgressSink) -> None:
        reference = f"{image}:{tag}" if tag else image
        try:
            with engine_errors(image=reference):
                params = {"fromImage": image, "tag": tag}
                async with self._request("POST", "images/create", params=params) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        message = orjson.loads(line)
                        # A pull that fails after it began is reported in the stream, under HTTP 200.
                        error = (message.get("errorDetail") or {}).get("message") or message.get("error")
                        if error:
                            raise NoSuchImage(reference, str(error))
                        progress(_progress_line(message))
        except (NoSuchImage, EngineUnavailable):
            raise
        except RuntimeFailure as exc:  # the engine refused the pull before streaming: unknown name, no registry
            raise NoSuchImage(reference, exc.message) from exc

    async def follow_logs(self, container: str, sink: LogSink, *, since: float = 0.0, follow: bool = True) -> None:
        tty = bool((await self.inspect_raw(container)).get("Config", {}).get("Tty"))
        params = {"stdout": "1", "stderr": "1", "follow": _flag(follow)}
        if since:
            params["since"] = f"{since:.9f}"
        with engine_errors(container=container):
            async with self._request("GET", f"containers/{container}/logs", params=params) as response:
                await _demultiplex(response.content, sink, tty=tty)

    async def exec(
        self,
        container: str,
        argv: Sequence[str],
        sink: LogSink,
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        workdir: str | None = None,
    ) -> int:
        """Run ``argv`` in the container. Cancelling stops the delivery, not the command: the API cannot kill it."""
        spec: dict[str, Any] = {"AttachStdout": True, "AttachStderr": True, "Tty": False, "Cmd": list(argv)}
        spec["Env"] = list(env)
        if user:
            spec["User"] = user
        if workdir:
            spec["WorkingDir"] = workdir
        with engine_errors(container=container):
            exec_id = str((await self._json("POST", f"containers/{container}/exec", body=spec))["Id"])
        with engine_errors():
            # Without an Upgrade header the engine sends the output as the body and closes when the command ends.
            async with self._request("POST", f"exec/{exec_id}/start", body={"Detach": False, "Tty": False}) as response:
                await _demultiplex(response.content, sink, tty=False)
            return await self._exec_exit_code(exec_id)

    async def _exec_exit_code(self, exec_id: str) -> int:
        # The output can end a moment before the engine records the exit code: poll until it has.
        delay = 0.005
        while True:
            info = await self._json("GET", f"exec/{exec_id}/json")
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def watch_events(self, sink: EventSink, *, since: float | None = None) -> None:
        params = {"filters": _dumps({"type": ["container"]})}
        if since is not None:
            params["since"] = f"{since:.9f}"
        with engine_errors():
            async with self._request("GET", "events", params=params) as response:
                async for line in response.content:
                    if line.strip():
                        sink(_event(orjson.loads(line)))
        raise EngineUnavailable("the Docker engine closed its event stream")


def _state(raw: Mapping[str, Any]) -> ContainerState:
    config = raw.get("Config") or {}
    state = raw.get("State") or {}
    return ContainerState(
        id=str(raw["Id"]),
        name=str(raw.get("Name", "")).lstrip("/"),
        image=str(config.get("Image") or raw.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status", "created")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        pid=int(state.get("Pid") or 0),
    )


def _event(message: Mapping[str, Any]) -> ContainerEvent:
    actor = message.get("Actor") or {}
    attributes: Mapping[str, str] = actor.get("Attributes") or {}
    action = str(message.get("Action") or message.get("status", ""))
    exit_code = attributes.get("exitCode")
    nanos = message.get("timeNano")
    return ContainerEvent(
        action=action,
        container_id=str(actor.get("ID") or message.get("id", "")),
        labels={key: value for key, value in attributes.items() if key not in _ENGINE_ATTRIBUTES},
        exit_code=int(exit_code) if action == "die" and exit_code is not None else None,
        time=nanos / 1e9 if nanos else float(message.get("time", 0)),
    )


def _progress_line(message: Mapping[str, Any]) -> str:
    """A pull progress message as the docker CLI prints it: ``id: status progress``."""
    text = str(message.get("status", ""))
    if message.get("progress"):
        text = f"{text} {message['progress']}"
    return f"{message['id']}: {text}" if message.get("id") else text


class _Lines:
    """Cuts one stream's bytes into lines, holding a partial line until its newline (or the end) comes."""

    def __init__(self, stream: Stream, sink: LogSink) -> None:
        self._stream: Stream = stream
        self._sink = sink
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes, *, final: bool = False) -> None:
        *lines, self._partial = (self._partial + self._decoder.decode(data, final=final)).split("\n")
        if final and self._partial:
            lines.append(self._partial)
            self._partial = ""
        for line in lines:
            self._sink(LogLine(self._stream, line.removesuffix("\r")))


async def _demultiplex(content: aiohttp.StreamReader, sink: LogSink, *, tty: bool) -> None:
    """Deliver a log or exec stream line by line: raw bytes with a tty, else frames tagged stdout or stderr."""
    streams = {1: _Lines("stdout", sink), 2: _Lines("stderr", sink)}
    if tty:
        async for chunk in content.iter_any():
            streams[1].feed(chunk)
    else:
        while True:
            try:
                header = await content.readexactly(_FRAME.size)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise EngineUnavailable("the Docker engine cut a log frame short") from exc
                break
            kind, length = _FRAME.unpack(header)
            try:
                payload = await content.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                raise EngineUnavailable("the Docker engine cut a log frame short") from exc
            if kind in streams:
                streams[kind].feed(payload)
    for lines in streams.values():
        lines.feed(b"", final=True)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _plain(value: Any) -> Any:
    """Let request bodies hold any mapping or collection, not only dicts and lists."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot send {type(value).__name__} to the Docker engine")
