"""Exec lines: commands, prefixes, separators, and every way a line can be wrong."""

from __future__ import annotations

import re

import pytest

from fleetlet.units.execline import ExecCommand, parse_exec_line

DOCKER_RUN = (
    '/usr/bin/docker run --rm --name busybox1 busybox /bin/sh -c "while true; do echo Hello World; sleep 1; done"'
)


@pytest.mark.parametrize(
    ("text", "commands"),
    [
        ("/bin/true", [ExecCommand(("/bin/true",), raw="/bin/true")]),
        ("true", [ExecCommand(("true",), raw="true")]),  # a plain name: PATH is searched
        (
            DOCKER_RUN,
            [
                ExecCommand(
                    (
                        "/usr/bin/docker",
                        "run",
                        "--rm",
                        "--name",
                        "busybox1",
                        "busybox",
                        "/bin/sh",
                        "-c",
                        "while true; do echo Hello World; sleep 1; done",
                    ),
                    raw=DOCKER_RUN,
                )
            ],
        ),
        (
            "/bin/echo $HOME ${USER} $$",  # kept as written: the runtime expands variables
            [ExecCommand(("/bin/echo", "$HOME", "${USER}", "$$"), raw="/bin/echo $HOME ${USER} $$")],
        ),
        ("-/bin/false", [ExecCommand(("/bin/false",), ignore_failure=True, raw="-/bin/false")]),
        (
            "@/bin/busybox sh -c x",
            [ExecCommand(("/bin/busybox", "sh", "-c", "x"), argv0_override=True, raw="@/bin/busybox sh -c x")],
        ),
        (":/bin/echo $X", [ExecCommand(("/bin/echo", "$X"), no_env_expansion=True, raw=":/bin/echo $X")]),
        ("+/bin/id", [ExecCommand(("/bin/id",), privilege="+", raw="+/bin/id")]),
        ("!/bin/id", [ExecCommand(("/bin/id",), privilege="!", raw="!/bin/id")]),
        ("!!/bin/id", [ExecCommand(("/bin/id",), privilege="!!", raw="!!/bin/id")]),
        (
            "-@:+/bin/a a0",
            [
                ExecCommand(
                    ("/bin/a", "a0"),
                    ignore_failure=True,
                    argv0_override=True,
                    no_env_expansion=True,
                    privilege="+",
                    raw="-@:+/bin/a a0",
                )
            ],
        ),
        (
            "!!:-/bin/a",  # any order
            [ExecCommand(("/bin/a",), ignore_failure=True, no_env_expansion=True, privilege="!!", raw="!!:-/bin/a")],
        ),
        (
            '"-/bin/a"',
            [ExecCommand(("/bin/a",), ignore_failure=True, raw='"-/bin/a"')],
        ),  # prefixes after unquoting
        (
            '"/opt/my app/run" "an arg"',
            [ExecCommand(("/opt/my app/run", "an arg"), raw='"/opt/my app/run" "an arg"')],
        ),
        (
            "-/bin/a x ; @/bin/b b0 ; c",  # each command has its own prefixes
            [
                ExecCommand(("/bin/a", "x"), ignore_failure=True, raw="-/bin/a x"),
                ExecCommand(("/bin/b", "b0"), argv0_override=True, raw="@/bin/b b0"),
                ExecCommand(("c",), raw="c"),
            ],
        ),
        (
            r"/usr/bin/find /tmp -name x -exec rm {} \; ; /bin/true",
            [
                ExecCommand(
                    ("/usr/bin/find", "/tmp", "-name", "x", "-exec", "rm", "{}", ";"),
                    raw=r"/usr/bin/find /tmp -name x -exec rm {} \;",
                ),
                ExecCommand(("/bin/true",), raw="/bin/true"),
            ],
        ),
        ("/bin/a;b", [ExecCommand(("/bin/a;b",), raw="/bin/a;b")]),
        ('/bin/echo ";"', [ExecCommand(("/bin/echo", ";"), raw='/bin/echo ";"')]),
        ("/bin/echo a-b @c", [ExecCommand(("/bin/echo", "a-b", "@c"), raw="/bin/echo a-b @c")]),
        ("/bin/echo -", [ExecCommand(("/bin/echo", "-"), raw="/bin/echo -")]),
        ("%f/run.sh %i", [ExecCommand(("%f/run.sh", "%i"), raw="%f/run.sh %i")]),  # %f is an absolute path
        ('/bin/echo ""', [ExecCommand(("/bin/echo", ""), raw='/bin/echo ""')]),
    ],
)
def test_parse_exec_line(text: str, commands: list[ExecCommand]) -> None:
    assert parse_exec_line(text) == commands


@pytest.mark.parametrize(
    ("text", "executable", "process_argv"),
    [
        ("/bin/ls -l", "/bin/ls", ("/bin/ls", "-l")),
        ("@/bin/busybox ls -l", "/bin/busybox", ("ls", "-l")),
        ("-@/bin/busybox ls", "/bin/busybox", ("ls",)),
    ],
)
def test_executable_and_process_argv(text: str, executable: str, process_argv: tuple[str, ...]) -> None:
    [command] = parse_exec_line(text)
    assert command.executable == executable
    assert command.process_argv == process_argv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty command"),
        ("   ", "empty command"),
        ("/bin/a ;", "empty command next to a ';' separator"),
        ("; /bin/a", "empty command next to a ';' separator"),
        ("/bin/a ; ; /bin/b", "empty command next to a ';' separator"),
        ("-", "empty program name after prefixes '-'"),
        ("-@:+", "empty program name after prefixes '-@:+'"),
        ("!!", "empty program name after prefixes '!!'"),
        ('"" x', "empty program name"),
        ("- /bin/a", "empty program name after prefixes '-'"),
        ('/bin/sh -c "echo', "unbalanced quoting"),
        ("/bin/sh -c 'echo", "unbalanced quoting"),
        (r"/bin/echo \q", "unknown escape sequence '\\q' (write \\\\ for a literal backslash)"),
        ("+!/bin/a", "prefixes '+' and '!' cannot be combined: give one"),
        ("!+/bin/a", "prefixes '!' and '+' cannot be combined: give one"),
        ("+!!/bin/a", "prefixes '+' and '!!' cannot be combined: give one"),
        ("!!!/bin/a", "prefixes '!!' and '!' cannot be combined: give one"),
        ("--/bin/a", "prefix '-' given twice in '--/bin/a'"),
        ("-@-/bin/a x", "prefix '-' given twice in '-@-/bin/a'"),
        ("@@/bin/a x", "prefix '@' given twice in '@@/bin/a'"),
        ("::/bin/a", "prefix ':' given twice in '::/bin/a'"),
        ("++/bin/a", "prefix '+' given twice in '++/bin/a'"),
        ("@/bin/a", "'@' needs a second word to pass as argv[0] after '/bin/a'"),
        ("|/bin/sh", "the '|' prefix (run through a shell) is not supported; write /bin/sh -c '...'"),
        ("bin/foo", "relative path 'bin/foo': give an absolute path, or a plain name to search PATH for"),
        ("./run.sh", "relative path './run.sh': give an absolute path, or a plain name to search PATH for"),
        ("-bin/foo x", "relative path 'bin/foo': give an absolute path, or a plain name to search PATH for"),
        (
            "/bin/a ; sub/dir",
            "relative path 'sub/dir': give an absolute path, or a plain name to search PATH for",
        ),
        ("..", "'..' is not a program name"),
        ("/usr/bin/", "'/usr/bin/' names a directory, not a program"),
        ("/usr/../bin/a", "program path '/usr/../bin/a' is not normalized (no //, . or .. components)"),
        ("/usr/./bin/a", "program path '/usr/./bin/a' is not normalized (no //, . or .. components)"),
        ("//bin/a", "program path '//bin/a' is not normalized (no //, . or .. components)"),
    ],
)
def test_parse_exec_line_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_exec_line(text)
