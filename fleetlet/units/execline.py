"""One ``Exec*=`` line (``ExecStartPre=``, ``ExecStart=``, ``ExecStop=``, ...) as the commands it runs.

A line holds one or more commands separated by a word that is exactly ``;``. Each command's first word may
start with prefixes, in any order, none twice:

- ``-`` a failing exit status is recorded but does not fail the unit;
- ``@`` the second word is passed as argv[0], the first word being the program to run;
- ``:`` ``$VAR`` is not expanded in this command;
- ``+``, ``!`` or ``!!`` (at most one) ask for extra privileges; a container has no host privileges to give,
  so fleetlet records them and they have no effect.

``$VAR`` and ``${VAR}`` are kept as written: the runtime expands them when it knows the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetlet.units.words import split_commands

EXEC_SETTINGS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
_PRIVILEGE_PREFIXES = ("!!", "+", "!")


@dataclass(frozen=True, slots=True)
class ExecCommand:
    """One command to run.

    ``argv`` holds every word of the command after unquoting. Usually ``argv[0]`` is the program and also the
    process's argv[0]; with ``@`` (``argv0_override``) ``argv[0]`` is the program and the process sees
    ``argv[1:]``. :attr:`executable` and :attr:`process_argv` spell this out for the runtime.
    """

    argv: tuple[str, ...]
    ignore_failure: bool = False
    argv0_override: bool = False
    no_env_expansion: bool = False
    privilege: str = ""  # "", "+", "!" or "!!"
    raw: str = ""  # the command as written, prefixes included, for logs and error messages

    @property
    def executable(self) -> str:
        """The program: an absolute path, or a plain name to look up in PATH."""
        return self.argv[0]

    @property
    def process_argv(self) -> tuple[str, ...]:
        """The argv the process sees, argv[0] included."""
        return self.argv[1:] if self.argv0_override else self.argv


def parse_exec_line(text: str) -> list[ExecCommand]:
    """The commands on one Exec line; ValueError naming the first problem."""
    split = split_commands(text)
    commands = []
    for raw, words in split:
        if not words:
            raise ValueError("empty command" if len(split) == 1 else "empty command next to a ';' separator")
        commands.append(_command(raw, words))
    return commands


def _command(raw: str, words: list[str]) -> ExecCommand:
    first = words[0]
    seen: set[str] = set()
    privilege = ""
    i = 0
    while i < len(first):
        prefix = first[i]
        if prefix == "!" and first.startswith("!!", i):
            prefix = "!!"
        if prefix not in ("-", "@", ":", "+", "!", "!!"):
            break
        if prefix in seen:
            raise ValueError(f"prefix '{prefix}' given twice in {first!r}")
        if prefix in _PRIVILEGE_PREFIXES:
            if privilege:
                raise ValueError(f"prefixes '{privilege}' and '{prefix}' cannot be combined: give one")
            privilege = prefix
        seen.add(prefix)
        i += len(prefix)
    executable = first[i:]
    if not executable:
        shown = f" after prefixes {first!r}" if first else ""
        raise ValueError(f"empty program name{shown}")
    if executable[0] == "|":
        raise ValueError("the '|' prefix (run through a shell) is not supported; write /bin/sh -c '...'")
    _check_executable(executable)
    argv0_override = "@" in seen
    if argv0_override and len(words) < 2:
        raise ValueError(f"'@' needs a second word to pass as argv[0] after {executable!r}")
    return ExecCommand(
        argv=(executable, *words[1:]),
        ignore_failure="-" in seen,
        argv0_override=argv0_override,
        no_env_expansion=":" in seen,
        privilege=privilege,
        raw=raw,
    )


def _check_executable(path: str) -> None:
    """An absolute, normalized path, or a plain name: a relative path would depend on the working dir."""
    if not path.startswith(("/", "%f")):  # %f expands to an absolute path
        if "/" in path:
            raise ValueError(f"relative path {path!r}: give an absolute path, or a plain name to search PATH for")
        if path in (".", ".."):
            raise ValueError(f"{path!r} is not a program name")
        return
    if path.endswith("/"):
        raise ValueError(f"{path!r} names a directory, not a program")
    if "//" in path or any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"program path {path!r} is not normalized (no //, . or .. components)")
