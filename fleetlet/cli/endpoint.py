"""Where the CLI finds fleet's API, and how a command talks to it: ``--endpoint``, ``--request-timeout``.

Both options go before the command, as fleetctl took them (``fleetlet --endpoint URL list-units``), or after it;
given in both places, the one after the command wins.

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


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Add the connection options to the main parser, before the command, with their defaults."""
    _add(parser, endpoint=None, request_timeout=DEFAULT_REQUEST_TIMEOUT)


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every command that talks to the API takes, after the command.

    They default to nothing at all (``SUPPRESS``): argparse copies every attribute of a command's namespace over
    the main one, so a default here would clobber the value given before the command.
    """
    _add(parser, endpoint=argparse.SUPPRESS, request_timeout=argparse.SUPPRESS)


def _add(parser: argparse.ArgumentParser, *, endpoint: object, request_timeout: object) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--endpoint",
        metavar="URL",
        default=endpoint,
        help="fleet API to talk to: http://HOST:PORT, https://HOST:PORT or unix:///PATH "
        f"(default: ${ENDPOINT_VARIABLES[0]}, else ${ENDPOINT_VARIABLES[1]}, else {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=request_timeout,
        help=f"give up on a request after this many seconds (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )


def endpoint_of(args: argparse.Namespace) -> str:
    """The flag, else the environment, else the local agent."""
    flag = getattr(args, "endpoint", None)
    if flag:
        return str(flag)
    for variable in ENDPOINT_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    return DEFAULT_ENDPOINT


def run_with_client(args: argparse.Namespace, command: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``command`` with a client of the chosen endpoint; its errors as one line on stderr and exit 1."""

    async def with_client() -> int:
        timeout = getattr(args, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        async with Client(endpoint_of(args), timeout=timeout) as fleet:
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
