"""Writing CSV cells that a spreadsheet opens as text, never as a formula.

The CSV answer echoes the client's cells and the model's class labels. A
spreadsheet program that opens a cell beginning with ``=``, ``+``, ``-`` or
``@`` (or a tab or carriage return, which some strip before looking) evaluates
it: ``=HYPERLINK(...)`` or ``=cmd|' /C calc'!A0`` in a cell is code. As OWASP
recommends for CSV injection, such a cell is written with a leading ``'``,
which spreadsheets show as text and do not evaluate. Numbers are left alone:
``-1.5`` and ``+3e-2`` stay numbers.
"""

from __future__ import annotations

import re

FORMULA_TRIGGERS = frozenset("=+-@\t\r")
_NUMBER = r"[ \t]*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[ \t]*"
_NUMBER_CELL = re.compile(_NUMBER + r"\Z")
# The start of every cell of unquoted CSV lines (cells end at a comma or a line
# break) that begins with a trigger and is not a number.
_FORMULA_CELL_START = re.compile(r"(?:^|(?<=,))(?=[-=+@\t])(?!" + _NUMBER + r"(?:,|$))", re.MULTILINE)
# Where a trigger can begin a cell of unquoted text: a quick test before the regex.
_CELL_STARTS = tuple(separator + trigger for separator in ",\n" for trigger in "=+-@\t")


def quote(cell: str) -> str:
    """A cell as CSV text: quoted if it holds a comma, a quote or a line break."""
    if any(char in cell for char in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def is_formula(cell: str) -> bool:
    """True if a spreadsheet would read ``cell`` as a formula."""
    return cell[:1] in FORMULA_TRIGGERS and not _NUMBER_CELL.match(cell)


def defuse(cell: str) -> str:
    """``cell``, with a leading ``'`` if a spreadsheet would read it as a formula."""
    return "'" + cell if is_formula(cell) else cell


def safe_cell(cell: str) -> str:
    """A text cell as CSV text that opens as the same text in a spreadsheet."""
    return quote(defuse(cell))


def safe_row(cells: list[str]) -> str:
    return ",".join(map(safe_cell, cells))


def defuse_plain_lines(lines: list[str]) -> list[str]:
    """Unquoted CSV lines (no quote, no line break inside) with every formula cell defused.

    One regular expression over the block's text: most blocks have no cell
    that begins with a trigger and are returned as they are.
    """
    text = "\n" + "\n".join(lines)
    if not any(start in text for start in _CELL_STARTS):
        return lines
    return _FORMULA_CELL_START.sub("'", text[1:]).split("\n")
