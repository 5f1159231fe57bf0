"""Reading unit-file text into a :class:`UnitFile`, following systemd.syntax(7).

- ``[Section]`` headers; ``Key=Value`` settings with whitespace around ``=`` and at both ends ignored;
- lines starting with ``#`` or ``;`` are comments, also between continued lines;
- a line ending in an unescaped ``\\`` continues on the next line, the backslash becoming one space. Unlike
  systemd we also drop the next line's indentation, so re-indenting a wrapped line never changes the unit's hash;
- repeated settings are all kept, in order; unknown sections and keys are kept too.

Where systemd logs a warning and skips a malformed line, fleetlet rejects the file, naming the file and line: a
unit that silently loses a line on its way to a cluster is worse than one that is refused.
"""

from __future__ import annotations

from fleetlet.diagnostics import Report
from fleetlet.units.model import UnitFile, UnitOption

MAX_UNIT_FILE_BYTES = 1024 * 1024
_WHITESPACE = " \t\r\n"
_BOM = "\ufeff"


def parse(data: str | bytes, source: str = "<unit>") -> UnitFile:
    """Parse unit-file text; raise :class:`~fleetlet.errors.UnitFileError` listing every problem found."""
    report = Report(source)
    unit = parse_into(data, report)
    report.raise_for_errors()
    assert unit is not None  # a report without errors always comes with a unit
    return unit


def parse_into(data: str | bytes, report: Report) -> UnitFile | None:
    """Parse, adding problems to ``report``; None when the text is not a usable unit file."""
    text = _decode(data, report)
    if text is None:
        return None
    options: list[UnitOption] = []
    lines: list[int] = []
    section: str | None = None  # None after a broken header, whose settings are dropped with one error
    section_known = False
    continued: str | None = None  # text gathered so far from lines ending in a backslash
    continued_from = 0

    physical = text.split("\n")
    if physical[0].startswith(_BOM):
        physical[0] = physical[0][1:]
    physical.append("")  # ends a continuation left open by a backslash on the last line
    for number, raw in enumerate(physical, 1):
        line = raw.strip(_WHITESPACE)
        if line[:1] in ("#", ";"):
            continue
        if continued is not None:
            line = (continued + line).strip(_WHITESPACE)  # a lone backslash leaves only the joining space
            number = continued_from
            continued = None
        if line.endswith("\\") and _ends_in_unescaped_backslash(line):
            continued = line[:-1].rstrip(_WHITESPACE) + " "
            continued_from = number
            continue
        if not line:
            continue
        if line[0] == "[":
            section = _section_name(line, number, report)
            section_known = True
            continue
        key, sep, value = line.partition("=")
        key = key.rstrip(_WHITESPACE)
        if not sep or not key:
            report.error(number, "expected key=value")
        elif not section_known:
            report.error(number, f"{key}= appears before any [Section] header")
        elif section is not None:  # settings under a broken header were reported with the header
            options.append(UnitOption(section, key, value.lstrip(_WHITESPACE)))
            lines.append(number)

    if not options and report.ok:
        report.error(0, "empty unit file: no settings found")
    if not report.ok:
        return None
    return UnitFile.from_options(options, lines, report.file)


def _decode(data: str | bytes, report: Report) -> str | None:
    if isinstance(data, bytes):
        size = len(data)
        if size > MAX_UNIT_FILE_BYTES:
            report.error(0, f"unit file too large: {size} bytes (the limit is {MAX_UNIT_FILE_BYTES})")
            return None
        if b"\0" in data:
            report.error(0, "binary data (NUL byte), not a unit file")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            report.error(_line_at(data, e.start), f"not UTF-8 text: invalid byte 0x{data[e.start]:02x}")
            return None
    if "\0" in data:
        report.error(0, "binary data (NUL character), not a unit file")
        return None
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError as e:
        report.error(data.count("\n", 0, e.start) + 1, "text holds a lone surrogate, which is not valid UTF-8")
        return None
    if size > MAX_UNIT_FILE_BYTES:
        report.error(0, f"unit file too large: {size} bytes (the limit is {MAX_UNIT_FILE_BYTES})")
        return None
    return data


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _ends_in_unescaped_backslash(line: str) -> bool:
    """``a\\`` continues; ``a\\\\`` is an escaped backslash and does not."""
    run = len(line) - len(line.rstrip("\\"))
    return run % 2 == 1


def _section_name(line: str, number: int, report: Report) -> str | None:
    if not line.endswith("]") or len(line) < 2:
        report.error(number, f"invalid section header {line!r}: expected [Name]")
        return None
    name = line[1:-1]
    if not name:
        report.error(number, "empty section name []")
        return None
    return name
