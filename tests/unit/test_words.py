"""Word splitting (systemd.syntax(7) quoting and escapes) and Exec-line command splitting."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.units.words import CommandWords, split_commands, split_words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", []),
        ("   \t\n\r ", []),
        ("a", ["a"]),
        ("a b\tc\nd\re", ["a", "b", "c", "d", "e"]),
        ("  lead and trail  ", ["lead", "and", "trail"]),
        ('"a b" c', ["a b", "c"]),
        ("'a b' c", ["a b", "c"]),
        ('a"b c"d', ["ab cd"]),
        ("\"a\"'b'c", ["abc"]),
        ('""', [""]),
        ("'' x", ["", "x"]),
        ('"it\'s"', ["it's"]),
        ("'say \"hi\"'", ['say "hi"']),
        ('"a;b" ;', ["a;b", ";"]),
        ("$HOME ${PATH}", ["$HOME", "${PATH}"]),
        ('"multi\nline"', ["multi\nline"]),
        # escapes, outside quotes
        (r"\a\b\f\n\r\t\v", ["\a\b\f\n\r\t\v"]),
        (r"back\\slash", ["back\\slash"]),
        (r"\"quoted\"", ['"quoted"']),
        (r"\'single\'", ["'single'"]),
        (r"a\sb", ["a b"]),
        (r"\x41\x7e", ["A~"]),
        (r"\101\176", ["A~"]),
        (r"\u00e9\u20ac", ["é€"]),
        (r"\U0001F600", ["\U0001f600"]),
        (r"\xc3\xa9", ["é"]),  # \x gives bytes, decoded together as UTF-8
        (r"\303\251t\303\251", ["été"]),
        # escapes, inside quotes
        (r'"a\tb" c', ["a\tb", "c"]),
        (r"'a\tb'", ["a\tb"]),
        (r'"a\"b"', ['a"b']),
        (r"'a\'b'", ["a'b"]),
        (r'"\x41\s\u00e9"', ["A é"]),
    ],
)
def test_split_words(text: str, words: list[str]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"a', "unbalanced quoting"),
        ("'a", "unbalanced quoting"),
        ('a "b c', "unbalanced quoting"),
        ("\"a'", "unbalanced quoting"),
        ("a\\", "lone backslash at the end of the value (write \\\\ for a literal backslash)"),
        ('"a\\', "lone backslash at the end of the value (write \\\\ for a literal backslash)"),
        (r"\q", "unknown escape sequence '\\q' (write \\\\ for a literal backslash)"),
        (r"a\;", "unknown escape sequence '\\;' (write \\\\ for a literal backslash)"),
        (r"\x4", "escape \\x needs exactly 2 digits, got \\x4"),
        (r"\xzz", "escape \\x needs exactly 2 digits, got \\xzz"),
        (r"\x00", "escape \\x00 gives a NUL byte, which is not allowed"),
        (r"\000", "escape \\000 gives a NUL byte, which is not allowed"),
        (r"\12", "escape \\ needs exactly 3 digits, got \\12"),
        (r"\128", "escape \\ needs exactly 3 digits, got \\128"),
        (r"\400", "octal escape \\400 is above \\377"),
        (r"\u00e", "escape \\u needs exactly 4 digits, got \\u00e"),
        (r"\u0000", "escape \\u0000 gives a NUL character, which is not allowed"),
        (r"\ud800", "escape \\ud800 is not a valid Unicode character"),
        (r"\U00110000", "escape \\U00110000 is not a valid Unicode character"),
        (r"\xc3", "escaped bytes \\xc3 are not valid UTF-8"),
        (r"\xc3x", "escaped bytes \\xc3 are not valid UTF-8"),
        (r"\xff\xfe", "escaped bytes \\xff\\xfe are not valid UTF-8"),
        (
            r"a\ b",
            "unknown escape sequence '\\ ' (write \\\\ for a literal backslash)",
        ),  # \s is the space escape
    ],
)
def test_split_words_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        split_words(text)


@pytest.mark.parametrize(
    ("text", "commands"),
    [
        ("/bin/a", [CommandWords("/bin/a", ["/bin/a"])]),
        (
            "/bin/a x ; /bin/b y",
            [CommandWords("/bin/a x", ["/bin/a", "x"]), CommandWords("/bin/b y", ["/bin/b", "y"])],
        ),
        ("/bin/a;b", [CommandWords("/bin/a;b", ["/bin/a;b"])]),  # only a word that is exactly ";" separates
        ("/bin/a ;b", [CommandWords("/bin/a ;b", ["/bin/a", ";b"])]),
        ('/bin/a ";"', [CommandWords('/bin/a ";"', ["/bin/a", ";"])]),  # quoted: an argument
        (
            r"find . -exec rm {} \;",
            [CommandWords(r"find . -exec rm {} \;", ["find", ".", "-exec", "rm", "{}", ";"])],
        ),
        ("/bin/a ;", [CommandWords("/bin/a", ["/bin/a"]), CommandWords("", [])]),
        ("; /bin/a", [CommandWords("", []), CommandWords("/bin/a", ["/bin/a"])]),
        ("a ; ; b", [CommandWords("a", ["a"]), CommandWords("", []), CommandWords("b", ["b"])]),
        ("", [CommandWords("", [])]),
        ("a\t;\tb", [CommandWords("a", ["a"]), CommandWords("b", ["b"])]),
    ],
)
def test_split_commands(text: str, commands: list[CommandWords]) -> None:
    assert split_commands(text) == commands


@given(st.text())
def test_split_words_returns_words_or_raises_value_error(text: str) -> None:
    try:
        words = split_words(text)
    except ValueError:
        return
    assert isinstance(words, list)
    assert all(isinstance(word, str) for word in words)


@given(st.text())
def test_split_commands_returns_commands_or_raises_value_error(text: str) -> None:
    try:
        commands = split_commands(text)
    except ValueError:
        return
    assert all(isinstance(word, str) for command in commands for word in command.words)


_QUOTE = str.maketrans({"\\": "\\\\", '"': '\\"'})


@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))))
def test_quoted_words_split_back_to_themselves(words: list[str]) -> None:
    """Any words, each escaped and put in double quotes, split back into exactly those words."""
    text = " ".join('"' + word.translate(_QUOTE) + '"' for word in words)
    assert split_words(text) == words
