"""Glob patterns for ``Conflicts=`` and ``Replaces=``, with the syntax and matching of Go's ``path.Match``.

fleet matched these globs with ``path.Match``, so a pattern must mean here what it meant there. ``fnmatch``
would not do: its ``*`` crosses ``/``, it negates a class with ``!``, not ``^``, it has no ``\\`` escape and
it accepts any pattern. The syntax::

    *        any run of characters except /
    ?        one character except /
    [...]    one character in the class: c, or a range lo-hi; [^...] negates. Inside, \\ escapes a character
             and - or ] must be escaped unless they form a range or close the class. A class may match /.
    \\c       the character c
    c        the character c

Like Go, a ``*`` followed by more pattern commits to the first place the next piece matches; that keeps
matching linear and gives exactly Go's answers. Where fleet silently matched nothing, fleetlet raises
ValueError: for a malformed pattern (fleet logged Go's error at debug level and went on) and for a reversed
range such as ``[z-a]`` (Go accepts it; it matches nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_NOT_SLASH = "[^/]"
_DASH = "'-' in a character class must be escaped unless it forms a range"


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled glob. Build with :func:`compile_glob`, which validates the pattern."""

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    def matches(self, name: str) -> bool:
        """Whether the whole of ``name`` matches, as ``path.Match(pattern, name)``."""
        return self.regex.fullmatch(name) is not None

    def __str__(self) -> str:
        return self.pattern


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Glob:
    """Compile ``pattern`` once; raise ValueError saying what is wrong with a malformed one."""
    return Glob(pattern, re.compile(_translate(pattern), re.DOTALL))


def glob_matches(pattern: str, name: str) -> bool:
    """``path.Match(pattern, name)``, compiling each pattern only once; ValueError on a malformed pattern."""
    return compile_glob(pattern).matches(name)


def literal_prefix(pattern: str) -> str:
    """The characters every name matching ``pattern`` starts with: those before its first special one.

    An escaped character would extend the prefix; stopping at the ``\\`` only makes the prefix shorter, which
    is still true of every match.
    """
    for i, char in enumerate(pattern):
        if char in "*?[\\":
            return pattern[:i]
    return pattern


class GlobSet:
    """Which of many patterns match a name, without trying every pattern on every name.

    Each pattern is filed under its literal prefix, so a name is tried only against the patterns whose prefix it
    starts with: one dictionary look-up per distinct prefix length. Templates' globs (``web@*``) all have long,
    distinct prefixes, which is what makes this fast for the Conflicts fleet's users write.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._by_prefix: dict[str, list[Glob]] = {}
        for pattern in sorted(set(patterns)):
            self._by_prefix.setdefault(literal_prefix(pattern), []).append(compile_glob(pattern))
        self._lengths = sorted({len(prefix) for prefix in self._by_prefix})
        self._cache: dict[str, tuple[str, ...]] = {}

    def matching(self, name: str) -> tuple[str, ...]:
        """The patterns that match ``name``, in pattern order within each prefix (remembered per name)."""
        found = self._cache.get(name)
        if found is None:
            hits: list[str] = []
            for length in self._lengths:
                if length > len(name):
                    break
                for glob in self._by_prefix.get(name[:length], ()):
                    if glob.matches(name):
                        hits.append(glob.pattern)
            found = self._cache[name] = tuple(hits)
        return found


def _translate(pattern: str) -> str:
    """The pattern as a regex for ``fullmatch``, cut like Go's into chunks that each follow a run of stars."""
    chunks: list[tuple[bool, str]] = []  # (preceded by a star, regex of the chunk)
    star = False
    pieces: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pieces or star:
                chunks.append((star, "".join(pieces)))
            star, pieces = True, []
            while i < len(pattern) and pattern[i] == "*":
                i += 1
            continue
        if char == "?":
            pieces.append(_NOT_SLASH)
            i += 1
        elif char == "[":
            piece, i = _class(pattern, i + 1)
            pieces.append(piece)
        elif char == "\\":
            if i + 1 == len(pattern):
                raise ValueError(_bad(pattern, "a trailing '\\' escapes nothing"))
            pieces.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            pieces.append(re.escape(char))
            i += 1
    chunks.append((star, "".join(pieces)))

    out: list[str] = []
    for index, (starred, chunk) in enumerate(chunks):
        last = index == len(chunks) - 1
        if not starred:
            out.append(chunk)  # the pattern's start: matches at the current position or not at all
        elif last:
            out.append(f"{_NOT_SLASH}*{chunk}")  # fullmatch tries every split of the name's tail
        else:
            # Every chunk matches a fixed number of characters; committing to its first match is what Go does
            # and it keeps the regex from backtracking across stars.
            out.append(f"(?>{_NOT_SLASH}*?{chunk})")
    return "".join(out)


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class whose ``[`` is just before ``i``; return its regex and the index past its ``]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    items: list[str] = []
    while True:
        if i < len(pattern) and pattern[i] == "]" and items:
            return f"[{'^' if negated else ''}{''.join(items)}]", i + 1
        lo, i = _class_char(pattern, i)
        if i < len(pattern) and pattern[i] == "-":
            if pattern[i + 1 : i + 2] == "]":
                raise ValueError(_bad(pattern, _DASH))
            hi, i = _class_char(pattern, i + 1)
            if lo > hi:
                raise ValueError(_bad(pattern, f"range '{lo}-{hi}' is reversed and matches nothing"))
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            items.append(re.escape(lo))


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a class, possibly escaped; like Go, the class must go on after it."""
    if i >= len(pattern):
        raise ValueError(_bad(pattern, "'[' is never closed"))
    char = pattern[i]
    if char == "]":
        raise ValueError(_bad(pattern, "a character class cannot be empty (write '\\]' for a literal ']')"))
    if char == "-":
        raise ValueError(_bad(pattern, _DASH))
    if char == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError(_bad(pattern, "'[' is never closed"))
        char = pattern[i]
    if i + 1 >= len(pattern):
        raise ValueError(_bad(pattern, "'[' is never closed"))
    return char, i + 1


def _bad(pattern: str, reason: str) -> str:
    return f"invalid glob {pattern!r}: {reason}"
