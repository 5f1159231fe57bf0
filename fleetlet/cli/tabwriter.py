"""Tables as fleetctl printed them: Go's ``text/tabwriter`` as fleetctl set it up (``0, 8, 1, '\\t', 0``).

fleetctl wrote each row as tab-separated cells through a tabwriter with minimum width 0, tab width 8, padding 1
and *tabs* as the padding character: every column is as wide as its widest cell plus one, rounded up to a multiple
of 8, and filled with tabs, so a terminal lines the columns up. The last cell of a row is never padded. Scripts
that split fleetctl's output on tabs keep working, because the output is byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Sequence

TAB_WIDTH = 8
PADDING = 1


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """The rows, one a line, each line ending in a newline; every row must have the same number of cells."""
    if not rows:
        return ""
    columns = len(rows[0])
    if any(len(row) != columns for row in rows):
        raise ValueError("every row of a table needs the same number of cells")
    widths = [max(len(row[c]) for row in rows) + PADDING for c in range(columns - 1)]
    lines = []
    for row in rows:
        cells = [cell + _tabs(len(cell), width) for cell, width in zip(row, widths, strict=False)]
        lines.append("".join(cells) + row[-1] + "\n")
    return "".join(lines)


def _tabs(text_width: int, cell_width: int) -> str:
    """Tabs from the end of the text to the column's edge, the edge rounded up to a tab stop (as Go does)."""
    edge = -(-cell_width // TAB_WIDTH) * TAB_WIDTH
    return "\t" * -(-(edge - text_width) // TAB_WIDTH)
