"""Conflicts=/Replaces= globs: Go's path.Match syntax and answers, and the patterns it refuses."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlet.units.globs import Glob, GlobSet, compile_glob, glob_matches, literal_prefix


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # literals: the whole name must match
        ("web.service", "web.service", True),
        ("web.service", "web.services", False),
        ("web.service", "xweb.service", False),
        ("", "", True),
        ("", "a", False),
        # * is any run of characters, / excepted
        ("hello_world@*", "hello_world@1.service", True),
        ("hello_world@*", "hello_world@.service", True),
        ("hello_world@*", "hello_world.service", False),
        ("hello_world@*.service", "hello_world@12.service", True),
        ("hello_world@*.service", "hello_world@12.socket", False),
        ("*", "", True),
        ("*", "anything.service", True),
        ("*", "a/b", False),
        ("a*", "a/b", False),
        ("a*/b", "abc/b", True),
        ("a*/b", "a/c/b", False),
        ("*c", "abc", True),
        ("a*b*c*d", "axbxcxd", True),
        ("a*b*c*d", "abdc", False),
        ("a**b", "axyb", True),
        ("*x*", "x", True),
        ("*.service", ".service", True),
        # ? is one character, / excepted
        ("db@?.service", "db@1.service", True),
        ("db@?.service", "db@12.service", False),
        ("db@?.service", "db@.service", False),
        ("a?b", "a/b", False),
        ("?", "é", True),
        # classes, ranges, negation with ^ (! is an ordinary character, as in Go)
        ("db@[0-9].service", "db@7.service", True),
        ("db@[0-9].service", "db@x.service", False),
        ("[a-cx-z]", "y", True),
        ("[a-cx-z]", "d", False),
        ("[abc]", "b", True),
        ("[^abc]", "b", False),
        ("[^abc]", "d", True),
        ("[^a-c]", "d", True),
        ("[!a]", "!", True),
        ("[!a]", "b", False),
        ("[^a]", "/", True),  # a class may match /, unlike * and ?
        ("*[^a]*c", "/c", True),
        ("*[^a]*c", "b/c", False),  # Go's answer: the class took "b" first, and a * cannot then cross the /
        ("[*?]", "*", True),
        ("[*?]", "x", False),
        ("[[]", "[", True),
        ("[\\]]", "]", True),
        ("[\\-]", "-", True),
        ("[a\\-z]", "b", False),
        ("[\\^x]", "^", True),
        ("[a-\\z]", "q", True),
        # backslash escapes the next character
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("\\?", "?", True),
        ("\\[a]", "[a]", True),
        ("\\a", "a", True),
        ("a\\\\b", "a\\b", True),
        # characters special to regexes or fnmatch are literal
        ("a.b", "axb", False),
        ("a+b", "a+b", True),
        ("(a|b)", "(a|b)", True),
        ("]", "]", True),
        ("-", "-", True),
        ("{a,b}", "a", False),
        # case matters
        ("Web*", "web.service", False),
    ],
)
def test_matches(pattern: str, name: str, expected: bool) -> None:
    assert glob_matches(pattern, name) is expected
    assert compile_glob(pattern).matches(name) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[", "'[' is never closed"),
        ("db[", "'[' is never closed"),
        ("[a", "'[' is never closed"),
        ("[a-", "'[' is never closed"),
        ("[a-b", "'[' is never closed"),
        ("[\\", "'[' is never closed"),
        ("[\\a", "'[' is never closed"),
        ("[]", "a character class cannot be empty"),
        ("[]a]", "a character class cannot be empty"),
        ("[^]", "a character class cannot be empty"),
        ("a\\", "a trailing '\\' escapes nothing"),
        ("\\", "a trailing '\\' escapes nothing"),
        ("[-a]", "'-' in a character class must be escaped"),
        ("[a-]", "'-' in a character class must be escaped"),
        ("[a--]", "'-' in a character class must be escaped"),
        ("[z-a]", "range 'z-a' is reversed"),
        ("[9-0]", "range '9-0' is reversed"),
        # refused wherever the mistake is, even after a part that cannot match (old Go missed these)
        ("x*[", "'[' is never closed"),
        ("nomatch[", "'[' is never closed"),
    ],
)
def test_malformed_pattern_is_refused(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid glob {pattern!r}: {reason}")):
        compile_glob(pattern)
    with pytest.raises(ValueError, match=re.escape(reason)):
        glob_matches(pattern, "anything")


def test_compiled_once_and_frozen() -> None:
    glob = compile_glob("web@*")
    assert glob is compile_glob("web@*")
    assert glob == Glob("web@*", glob.regex)
    assert str(glob) == "web@*"
    with pytest.raises(dataclasses.FrozenInstanceError):
        glob.pattern = "db@*"  # type: ignore[misc]


def test_many_stars_do_not_backtrack() -> None:
    """A * commits to the first match of what follows it (as in Go), so this answers at once."""
    pattern = "*a" * 30 + "*b"
    assert not glob_matches(pattern, "a" * 256)
    assert glob_matches(pattern, "a" * 255 + "b")


def _reference(pattern: str, name: str) -> bool:
    """A plain backtracking matcher over the subset the property test draws from (no /, as in unit names,
    where Go's committing to the first match and full backtracking give the same answers)."""
    if not pattern:
        return not name
    head = pattern[0]
    if head == "*":
        return any(_reference(pattern[1:], name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    if head == "?":
        return _reference(pattern[1:], name[1:])
    if head == "[":
        end = pattern.index("]")
        members = pattern[1:end]
        negated = members.startswith("^")
        members = members.removeprefix("^")
        hit = name[0] in members or (len(members) == 3 and members[1] == "-" and members[0] <= name[0] <= members[2])
        return hit != negated and _reference(pattern[end + 1 :], name[1:])
    return head == name[0] and _reference(pattern[1:], name[1:])


@given(
    st.lists(st.sampled_from(["a", "b", "*", "?", "[ab]", "[^a]", "[b-c]"]), max_size=8).map("".join),
    st.text(alphabet="abc", max_size=10),
)
def test_agrees_with_a_plain_matcher(pattern: str, name: str) -> None:
    assert glob_matches(pattern, name) is _reference(pattern, name)


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("svc3@*", "svc3@"),
        ("web.service", "web.service"),
        ("*", ""),
        ("w?b@*", "w"),
        ("db@[0-2].service", "db@"),
        ("a\\*b", "a"),
        ("", ""),
    ],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


GLOB_PIECES = ["a", "b", "@", "*", "?", "[ab]", "[^a]", "\\b"]


@given(
    st.lists(st.lists(st.sampled_from(GLOB_PIECES), max_size=6).map("".join), max_size=8),
    st.text(alphabet="ab@", max_size=8),
)
def test_glob_set_finds_exactly_the_patterns_that_match(patterns: list[str], name: str) -> None:
    found = GlobSet(patterns).matching(name)
    assert sorted(found) == sorted({pattern for pattern in patterns if glob_matches(pattern, name)})
    assert all(name.startswith(literal_prefix(pattern)) for pattern in found)
