"""Tables aligned byte for byte as Go's tabwriter aligned fleetctl's (minwidth 0, tabwidth 8, padding 1, tabs)."""

from __future__ import annotations

import pytest

from fleetlet.cli.tabwriter import format_table


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], ""),
        ([["only"]], "only\n"),
        ([["a", "b"]], "a\tb\n"),
        # widest cell 13 + padding 1 = 14, rounded up to the tab stop at 16: "UNIT" needs two tabs to reach it
        ([["UNIT", "HASH"], ["hello.service", "abc"]], "UNIT\t\tHASH\nhello.service\tabc\n"),
        # 7 + 1 fits the first tab stop exactly; 8 + 1 does not
        ([["1234567", "x"], ["1", "y"]], "1234567\tx\n1\ty\n"),
        ([["12345678", "x"], ["1", "y"]], "12345678\tx\n1\t\ty\n"),
        # an empty cell still takes one padding character, hence a tab
        ([["", "x"]], "\tx\n"),
        # the last column is never padded, however wide
        ([["a", "b", "long last cell"], ["ccccccccc", "d", "e"]], "a\t\tb\tlong last cell\nccccccccc\td\te\n"),
    ],
)
def test_columns_are_padded_with_tabs_to_the_tab_stop(rows: list[list[str]], expected: str) -> None:
    assert format_table(rows) == expected


def test_rows_must_have_the_same_number_of_cells() -> None:
    with pytest.raises(ValueError, match="same number of cells"):
        format_table([["a", "b"], ["c"]])
