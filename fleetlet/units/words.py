"""Splitting a setting's value into words, with systemd.syntax(7) quoting and C-style escapes.

Words are separated by spaces, tabs and newlines. Single or double quotes wrap all or part of a word and
are removed (``a"b c"d`` is the one word ``ab cd``); ``""`` is an empty word. Escapes work inside and outside
quotes. ``\\xHH`` and ``\\NNN`` give bytes, as in systemd, so ``\\xc3\\xa9`` is ``é``; bytes that do not
form UTF-8 are an error.

Exec lines add one rule (see :func:`split_commands`): a word that is exactly ``;`` separates commands, and
``\\;`` is a literal semicolon.

The scanner jumps over runs of plain characters with a regex, since unit files are checked on every submit and
every agent reconcile.
"""

from __future__ import annotations

import re
from typing import NamedTuple, cast

_WHITESPACE = " \t\n\r"
_HEX = frozenset("0123456789abcdefABCDEF")
_OCTAL = frozenset("01234567")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}
_PLAIN = re.compile(r"[^ \t\n\r\"'\\]+")
_IN_DOUBLE = re.compile(r'[^"\\]+')
_IN_SINGLE = re.compile(r"[^'\\]+")


class CommandWords(NamedTuple):
    """One command of an Exec line: its text as written (without the separators) and its words."""

    raw: str
    words: list[str]


def split_words(text: str) -> list[str]:
    """Split ``text`` into unquoted, unescaped words; ValueError on bad quoting or escapes."""
    words, _ = _scan(text, commands=False)
    return cast("list[str]", words)  # only commands=True yields separators (None)


def split_commands(text: str) -> list[CommandWords]:
    """Split an Exec line into commands at each word that is exactly ``;`` (unquoted and unescaped).

    Empty commands are kept (as empty word lists) so that the caller can reject them.
    """
    words, separators = _scan(text, commands=True)
    groups: list[list[str]] = [[]]
    for word in words:
        if word is None:
            groups.append([])
        else:
            groups[-1].append(word)
    bounds = zip([0, *(at + 1 for at in separators)], [*separators, len(text)], strict=True)
    return [
        CommandWords(text[start:end].strip(_WHITESPACE), group)
        for group, (start, end) in zip(groups, bounds, strict=True)
    ]


def _scan(text: str, *, commands: bool) -> tuple[list[str | None], list[int]]:
    """Words in order, None for a command separator; and the offsets of those separators."""
    words: list[str | None] = []
    separators: list[int] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            return words, separators
        if commands and text[i] == ";" and (i + 1 == n or text[i + 1] in _WHITESPACE):
            words.append(None)
            separators.append(i)
            i += 1
            continue
        parts: list[str] = []
        pending = bytearray()  # bytes from \x and octal escapes, decoded as UTF-8 once the run ends
        quote = ""
        while i < n:
            char = text[i]
            if quote:
                if char == quote:
                    quote = ""
                    i += 1
                    continue
                run = (_IN_DOUBLE if quote == '"' else _IN_SINGLE).match(text, i)
            elif char in _WHITESPACE:
                break
            elif char == '"' or char == "'":
                quote = char
                i += 1
                continue
            else:
                run = _PLAIN.match(text, i)
            if run is not None:
                if pending:
                    parts.append(_decode(pending))
                    pending = bytearray()
                parts.append(run.group())
                i = run.end()
                continue
            value, i = _unescape(text, i + 1, commands)  # text[i] is a backslash
            if isinstance(value, int):
                pending.append(value)
            else:
                if pending:
                    parts.append(_decode(pending))
                    pending = bytearray()
                parts.append(value)
        if quote:
            raise ValueError("unbalanced quoting")
        if pending:
            parts.append(_decode(pending))
        words.append("".join(parts))


def _unescape(text: str, i: int, commands: bool) -> tuple[str | int, int]:
    """Decode the escape whose letter is at ``text[i]``: a character, or an int for a raw byte >= 0x80."""
    if i >= len(text):
        raise ValueError("lone backslash at the end of the value (write \\\\ for a literal backslash)")
    char = text[i]
    simple = _SIMPLE_ESCAPES.get(char)
    if simple is not None:
        return simple, i + 1
    if char == "x":
        return _byte(_digits(text, i + 1, 2, _HEX, "\\x"), 16, "\\x"), i + 3
    if char in _OCTAL:
        return _byte(_digits(text, i, 3, _OCTAL, "\\"), 8, "\\"), i + 3
    if char == "u" or char == "U":
        width = 4 if char == "u" else 8
        digits = _digits(text, i + 1, width, _HEX, "\\" + char)
        point = int(digits, 16)
        if point == 0:
            raise ValueError(f"escape \\{char}{digits} gives a NUL character, which is not allowed")
        if 0xD800 <= point <= 0xDFFF or point > 0x10FFFF:
            raise ValueError(f"escape \\{char}{digits} is not a valid Unicode character")
        return chr(point), i + 1 + width
    if commands and char == ";":
        return ";", i + 1
    raise ValueError(f"unknown escape sequence '\\{char}' (write \\\\ for a literal backslash)")


def _digits(text: str, start: int, count: int, allowed: frozenset[str], escape: str) -> str:
    digits = text[start : start + count]
    if len(digits) != count or not allowed.issuperset(digits):
        raise ValueError(f"escape {escape} needs exactly {count} digits, got {escape}{digits}")
    return digits


def _byte(digits: str, base: int, escape: str) -> str | int:
    value = int(digits, base)
    if value == 0:
        raise ValueError(f"escape {escape}{digits} gives a NUL byte, which is not allowed")
    if value > 0xFF:
        raise ValueError(f"octal escape {escape}{digits} is above \\377")
    return chr(value) if value < 0x80 else value


def _decode(pending: bytearray) -> str:
    try:
        return pending.decode("utf-8")
    except UnicodeDecodeError:
        shown = "".join(f"\\x{b:02x}" for b in pending)
        raise ValueError(f"escaped bytes {shown} are not valid UTF-8") from None
