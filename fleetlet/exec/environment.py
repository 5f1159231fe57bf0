"""Environment variables as systemd and the docker CLI handle them: files, assignments and ``$VAR`` in Exec lines.

Two file formats meet in a unit. ``EnvironmentFile=`` is systemd's: shell-like quoting, comments, continued
lines. ``docker run --env-file`` is docker's: each line taken literally, no quotes removed. Mixing them up
changes values silently (``A="x"`` is ``x`` to systemd and ``"x"`` to docker), so each has its own reader.

All of it is pure: callers read the files, so the same code serves the agent and ``fleetlet verify``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from fleetlet.units.words import split_words

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE = " \t\n\r"  # systemd's, for trimming values and splitting $VAR
_INLINE_WHITESPACE = " \t\f\v"  # between words on one line
_DOUBLE_QUOTE_ESCAPES = frozenset('"\\`$')
_WHOLE_WORD = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_IN_WORD = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SPLIT = re.compile(r"[ \t\n\r]+")


class EnvironmentFileError(ValueError):
    """A line of an environment file that cannot be read; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def read_environment_file(text: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` pairs, in order, from systemd's EnvironmentFile= format.

    ``#`` and ``;`` start comment lines; ``export`` before a name is allowed; whitespace around ``=`` and at the
    end of an unquoted value is dropped. A value may be single- or double-quoted, and quoted parts join the
    text around them. Inside double quotes only ``\\"``, ``\\\\``, ``\\$`` and ``\\``` are escapes; elsewhere, as
    in systemd, a backslash takes the next character literally. A backslash at the end of a line continues the
    value on the next one. Where systemd skips a bad line, this raises :class:`EnvironmentFileError`.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\0" in text:
        raise EnvironmentFileError(text.count("\n", 0, text.index("\0")) + 1, "NUL character")
    pairs: list[tuple[str, str]] = []
    i, line = 0, 1
    while i < len(text):
        char = text[i]
        if char == "\n":
            line += 1
            i += 1
        elif char in _INLINE_WHITESPACE:
            i += 1
        elif char in "#;":
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
        else:
            start = line
            end = _find_any(text, i, "=\n")
            if end == len(text) or text[end] == "\n":
                raise EnvironmentFileError(start, f"expected KEY=VALUE, got {text[i:end].strip()!r}")
            key = text[i:end].rstrip(_WHITESPACE)
            if key.startswith("export") and key[6:7] in (" ", "\t"):
                key = key[6:].lstrip(_WHITESPACE)
            if not _NAME.fullmatch(key):
                raise EnvironmentFileError(start, f"invalid variable name {key!r}")
            value, i, line = _value(text, end + 1, line)
            pairs.append((key, value))
    return pairs


def _find_any(text: str, start: int, chars: str) -> int:
    found = [at for at in (text.find(c, start) for c in chars) if at != -1]
    return min(found, default=len(text))


def _value(text: str, i: int, line: int) -> tuple[str, int, int]:
    """One value from ``text[i]`` to the end of its (logical) line: the value, the next index and line."""
    start = line
    out: list[str] = []
    keep = 0  # out[:keep] survives: trailing unquoted whitespace is dropped
    leading = True  # before any unquoted text: whitespace is skipped and quotes open a quoted part
    while i < len(text):
        char = text[i]
        if char == "\n":
            return "".join(out[:keep]), i + 1, line + 1
        if char == "\\":
            following = text[i + 1 : i + 2]
            if following == "\n":
                line += 1
            elif following:
                out.append(following)
                keep = len(out)
            leading = False
            i += 2
        elif leading and char in _INLINE_WHITESPACE:
            i += 1
        elif leading and char in "'\"":
            i, line = _quoted(text, i, line, out, start)
            keep = len(out)
        else:
            out.append(char)
            if char not in _INLINE_WHITESPACE:
                keep = len(out)
            leading = False
            i += 1
    return "".join(out[:keep]), i, line


def _quoted(text: str, i: int, line: int, out: list[str], start: int) -> tuple[int, int]:
    """A quoted part opening at ``text[i]``, appended to ``out``; the index after it and the line it ends on."""
    quote = text[i]
    i += 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return i + 1, line
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if following == "\n":
                line += 1
            elif quote == "'" or following in _DOUBLE_QUOTE_ESCAPES:
                out.append(following)
            else:
                out.append("\\" + following)
            i += 2
            continue
        if char == "\n":
            line += 1
        out.append(char)
        i += 1
    kind = "single" if quote == "'" else "double"
    raise EnvironmentFileError(start, f"unterminated {kind}-quoted value")


def read_docker_env_file(text: str) -> list[str]:
    """Entries from a ``docker run --env-file`` file: ``NAME=value`` taken literally, or a bare ``NAME``.

    Blank lines and lines starting with ``#`` are skipped; leading whitespace is dropped. A bare ``NAME`` means
    "the value from the environment", which the caller resolves (see :func:`resolve_docker_env`).
    """
    entries: list[str] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = raw.removesuffix("\r").lstrip(_WHITESPACE)
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            raise EnvironmentFileError(number, "NUL character")
        name, sep, _ = line.partition("=")
        if not sep:
            line = name = name.rstrip(_WHITESPACE)
        if not name:
            raise EnvironmentFileError(number, f"no variable name in {line!r}")
        if any(c in _WHITESPACE for c in name):
            raise EnvironmentFileError(number, f"variable name {name!r} contains whitespace")
        entries.append(line)
    return entries


def parse_assignments(text: str) -> list[tuple[str, str]]:
    """The pairs of one ``Environment=`` value: ``A=1 "B=two words"``, with systemd's quoting."""
    pairs = []
    for word in split_words(text):
        name, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"{word!r} is not a VAR=value assignment")
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid variable name {name!r} in {word!r}")
        pairs.append((name, value))
    return pairs


def resolve_environment(
    assignments: Iterable[tuple[str, str]], files: Iterable[tuple[str, str]] = ()
) -> dict[str, str]:
    """The environment of a service: ``Environment=`` pairs, then each EnvironmentFile= in order; later wins.

    ``files`` holds ``(path, text)``; a bad line raises ValueError as ``path:line: reason``. systemd reads
    every EnvironmentFile= after every Environment=, so a file overrides an assignment whatever their order.
    """
    env = dict(assignments)
    for path, text in files:
        try:
            env.update(read_environment_file(text))
        except EnvironmentFileError as e:
            raise ValueError(f"{path}:{e.line}: {e.reason}") from None
    return env


def resolve_docker_env(
    flags: Sequence[str], env_files: Iterable[tuple[str, str]], environment: Mapping[str, str]
) -> list[str]:
    """The final ``Env`` of a ``docker run``: ``--env-file`` entries first, then ``-e`` flags; later wins.

    ``env_files`` holds ``(path, text)``; a bad line raises ValueError as ``path:line: reason``. A bare ``NAME``
    takes the unit's value. When the unit has none it stays bare, as the docker CLI leaves it, and the engine
    then removes ``NAME`` from the image's defaults.
    """
    entries: list[str] = []
    for path, text in env_files:
        try:
            entries.extend(read_docker_env_file(text))
        except EnvironmentFileError as e:
            raise ValueError(f"{path}:{e.line}: {e.reason}") from None
    resolved: dict[str, str] = {}
    for entry in [*entries, *flags]:
        name, sep, _ = entry.partition("=")
        if sep:
            resolved[name] = entry
        elif name in environment:
            resolved[name] = f"{name}={environment[name]}"
        else:
            resolved[name] = name
    return list(resolved.values())


def expand_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Expand variables in a command as systemd.service(5) does, argv[0] included.

    ``${VAR}`` inside a word is replaced in place; a word that is exactly ``$VAR`` becomes the value split at
    whitespace (zero or more words); ``$$`` is a literal ``$``; an unset variable is empty. Any other ``$``
    stays as written.
    """
    expanded: list[str] = []
    for word in argv:
        whole = _WHOLE_WORD.fullmatch(word)
        if whole is not None:
            expanded.extend(part for part in _SPLIT.split(env.get(whole.group(1), "")) if part)
        else:
            expanded.append(_IN_WORD.sub(lambda m: env.get(m.group(1), "") if m.group(1) else "$", word))
    return expanded
