"""Where the CLI finds fleet's API, and how a command talks to it: ``--endpoint``, ``--request-timeout``.

Every command that needs the cluster goes through :func:`run_with_client`: it opens one
:class:`~fleetlet.client.Client`, runs the command's coroutine, and turns any failure into one line on stderr and
exit status 1, so a user never sees a traceback for an unreachable endpoint or a refused request.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from fleetlet.client import Client, ClientError

# The local agent's API socket: like fleetctl, which talked to the fleet daemon on this machine unless told
# otherwise, the CLI needs no flag on a machine that runs an agent.
DEFAULT_ENDPOINT: Final = "unix:///var/run/fleetlet.sock"
# fleetctl's --request-timeout default, in seconds.
DEFAULT_REQUEST_TIMEOUT: Final = 3.0
# FLEETLET_ENDPOINT is fleetlet's own name and wins; FLEETCTL_ENDPOINT keeps fleetctl users' settings working.
ENDPOINT_VARIABLES: Final = ("FLEETLET_ENDPOINT", "FLEETCTL_ENDPOINT")


class CommandError(Exception):
    """A failure the user can act on; its message is printed as is, on one line, and the command exits 1."""


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every command that talks to the API takes."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--endpoint",
        metavar="URL",
        help="fleet API to talk to: http://HOST:PORT, https://HOST:PORT or unix:///PATH "
        f"(default: ${ENDPOINT_VARIABLES[0]}, else ${ENDPOINT_VARIABLES[1]}, else {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_REQUEST_TIMEOUT,
        help=f"give up on a request after this many seconds (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )


def endpoint_of(args: argparse.Namespace) -> str:
    """The flag, else the environment, else the local agent."""
    if args.endpoint:
        return str(args.endpoint)
    for variable in ENDPOINT_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    return DEFAULT_ENDPOINT


def run_with_client(args: argparse.Namespace, command: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``command`` with a client of the chosen endpoint; its errors as one line on stderr and exit 1."""

    async def with_client() -> int:
        async with Client(endpoint_of(args), timeout=args.request_timeout) as fleet:
            return await command(fleet)

    try:
        return anyio.run(with_client)
    except CommandError as e:
        print(e, file=sys.stderr)
    except ClientError as e:
        print(f"Error: {_one_line(str(e))}", file=sys.stderr)
    return 1


def _one_line(message: str) -> str:
    """An API error may list several problems, one a line; the terminal gets them on one."""
    return "; ".join(line for line in message.splitlines() if line)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value
