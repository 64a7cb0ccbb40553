"""Rows of text cells (a CSV file's), judged by a model's rule set and turned into its input matrix.

A cell is read as its feature's type, then judged by the same rules as a JSON
value (``service.models.rules``), whole columns at once:

- ``float`` and ``int``: a number as Python's ``float()`` reads it (surrounding
  whitespace allowed); an integer written without a fraction is read exactly,
  as a JSON integer is, so one beyond 2**53 is compared with the bounds exactly;
- ``bool``: ``true``/``false`` in any case, or ``1``/``0``;
- ``category``: the text itself;
- a missing value: passed to the model where the feature is nullable, an error
  elsewhere. An empty cell is one; for a nullable feature, so are the texts that
  pandas reads as missing (``NA``, ``N/A``, ``NaN``, ``null``...; see
  ``MISSING_MARKERS``), unless the text is one of the feature's categories.

Only the cells that fail are looked at one by one, to word their messages with
the rule set's exact rules: a CSV cell and a JSON value that break the same rule
get the same message.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import ROW_ERROR_KEY, InvalidInput
from service.models.rules import Checked, RowErrors, RuleSet

MISSING_VALUE = "Missing value: the cell is empty."
# What pandas.read_csv takes as a missing value by default, save the exotic ones:
# files written by R or pandas spell missing values so.
MISSING_MARKERS = frozenset(
    {"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "null", "NULL", "None", "<NA>", "#N/A"}
)
_TRUE = ("true", "1")
_FALSE = ("false", "0")
# An integer as JSON writes one: read exactly, not through a float.
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


@dataclass(frozen=True)
class CellRows:
    """Rows of a CSV file for the prediction core.

    ``cells`` holds the feature cells (an object array of ``str``, rows x features
    in manifest order) of the rows at ``checked``; the other rows have a fault of
    the whole row in ``row_faults`` (index -> message), found while reading.
    ``lines`` is the line on which each row starts, for messages.
    """

    cells: np.ndarray
    lines: np.ndarray
    checked: np.ndarray
    row_faults: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    def check(self, rules: RuleSet, *, strict: bool = True) -> Checked:
        found = check_cells(rules, self.cells)
        errors = {int(self.checked[index]): fields for index, fields in found.errors.items()}
        errors.update({index: {ROW_ERROR_KEY: [message]} for index, message in self.row_faults.items()})
        errors = dict(sorted(errors.items()))
        if errors and strict:
            return Checked.refused(len(self), errors)
        return Checked.partly(len(self), found.matrix, errors)

    def refuse(self, errors: RowErrors) -> InvalidInput:
        rows = len(self)
        detail = (
            f"{len(errors)} of the first {rows} row{'s' if rows != 1 else ''} "
            f"{'are' if len(errors) != 1 else 'is'} invalid, so nothing was predicted; 'errors' names each "
            "bad field by line (the header is line 1)."
        )
        return InvalidInput(
            detail, {f"line {int(self.lines[index])}": fields for index, fields in errors.items()}
        )


def check_cells(rules: RuleSet, cells: np.ndarray) -> Checked:
    """Judge a block of text cells (rows x features); the matrix holds the valid rows."""
    rows = cells.shape[0]
    valid = np.ones(rows, dtype=bool)
    columns: list[Any] = []
    bad_cells: list[tuple[int, np.ndarray]] = []
    for index, feature in enumerate(rules.features):
        column = cells[:, index]
        empty = _missing(column, feature.categories) if feature.nullable else None
        missing = empty is not None and empty.any()
        if feature.type == "category":
            if missing:
                column = column.copy()
                column[empty] = None  # the rule set's missing value
            values, ok = column, rules.category_passes(index, column)
            if not feature.nullable and feature.accepts_unknown:
                ok &= column != ""  # an empty cell is a missing value, never an unknown category
        elif feature.type == "bool":
            lowered = np.strings.lower(column.astype(np.dtypes.StringDType()))
            values = (lowered == _TRUE[0]) | (lowered == _TRUE[1])
            ok = values | (lowered == _FALSE[0]) | (lowered == _FALSE[1])
            if missing:
                values = values.astype(object)
                values[empty] = None
                ok |= empty
        else:
            values, ok = _numbers(rules, index, column, empty if missing else None)
        columns.append(values)
        if not ok.all():
            valid &= ok
            bad_cells.append((index, np.flatnonzero(~ok)))
    errors: RowErrors = {}
    said: dict[tuple[int, str], list[str]] = {}  # a file repeats its bad cells: word each once
    for index, bad_rows in bad_cells:
        name = rules.names[index]
        for row, cell in zip(bad_rows.tolist(), cells[bad_rows, index].tolist(), strict=True):
            key = (index, cell)
            if key not in said:
                said[key] = _messages(rules, index, cell)
            errors.setdefault(row, {})[name] = said[key]
    kept = [column[valid] if isinstance(column, np.ndarray) else _kept(column, valid) for column in columns]
    return Checked(valid, rules.assemble(kept, int(valid.sum())), errors)


def _missing(column: np.ndarray, categories: tuple[str, ...] | None) -> np.ndarray:
    """Which cells of a nullable feature are missing values (a category keeps its own names)."""
    markers = MISSING_MARKERS.difference(categories) if categories else MISSING_MARKERS
    return np.fromiter(map(markers.__contains__, column), dtype=bool, count=len(column))


def _numbers(
    rules: RuleSet, index: int, column: np.ndarray, empty: np.ndarray | None
) -> tuple[Any, np.ndarray]:
    """(values, passes) for a numeric feature's cells: one vectorised reading and judgement.

    ``empty`` marks the missing values of a nullable feature: they become NaN.
    Elsewhere a cell that reads as NaN is refused.
    """
    if empty is not None:  # read as NaN in the one vectorised conversion
        column = column.copy()
        column[empty] = "nan"
    values, parsed = _parse_floats(column)
    if empty is None:
        ok = parsed & rules.numbers_pass(values[:, None], index)[:, 0]
    else:
        ok = (parsed | empty) & rules.numbers_pass(values[:, None], index, missing=empty[:, None])[:, 0]
    # Values at or beyond 2**53 are judged exactly: an integer cell by its exact
    # value, as a JSON integer is; anything else as the float it reads as.
    large = np.flatnonzero(parsed & ~ok & np.isfinite(values) & (np.abs(values) >= 2.0**53))
    if not len(large):
        return values, ok
    exact: list[Any] = values.tolist()
    for row in large.tolist():
        value, messages = rules.judge(index, _exact_number(column[row]))
        if messages is None:
            ok[row] = True
            exact[row] = value
    return exact, ok


def _parse_floats(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, parsed): one vectorised conversion; cell by cell only if some cell is not a number."""
    try:
        return column.astype(np.float64), np.ones(len(column), dtype=bool)
    except ValueError:
        pass
    values = np.full(len(column), np.nan)
    parsed = np.zeros(len(column), dtype=bool)
    for row, cell in enumerate(column.tolist()):
        try:
            values[row] = float(cell)
        except ValueError:
            continue
        parsed[row] = True
    return values, parsed


def _exact_number(cell: str) -> int | float:
    return int(cell) if _INTEGER.fullmatch(cell) else float(cell)


def _kept(column: list[Any], valid: np.ndarray) -> list[Any]:
    return [value for value, keep in zip(column, valid.tolist(), strict=True) if keep]


def _messages(rules: RuleSet, index: int, cell: str) -> list[str]:
    """Why ``cell`` fails: the same words the JSON API uses for the same fault."""
    if cell == "":
        return [MISSING_VALUE]
    feature = rules.features[index]
    value: Any = cell
    if feature.is_numeric:
        # Not a number at all: the text itself goes, and the exact rule says so.
        with contextlib.suppress(ValueError):
            value = _exact_number(cell)
    elif feature.type == "bool":
        lowered = cell.lower()
        value = True if lowered in _TRUE else False if lowered in _FALSE else cell
    return rules.judge(index, value)[1] or ["Not a valid value."]  # the fallback is never reached
