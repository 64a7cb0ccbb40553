"""Rows from a JSON body, judged by a model's rule set and turned into its input matrix.

A row is an object of named features or a list of values in manifest order.
When a batch is regular (every row a list of the manifest's length, or every
row an object of exactly its features) and its values have the expected JSON
types, the rule set judges whole columns at once with numpy. Rows that may not
pass, and every row of an irregular batch, are judged one by one by the exact
rules (the row schema), which also word every message. So an answer is the same
whichever way a row went; ``tests/test_json_rows.py`` holds the two ways to
the same verdicts and matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from marshmallow import ValidationError

from service.errors import ROW_ERROR_KEY, InvalidInput, listing
from service.models.rules import Checked, RowErrors, RuleSet

_NUMBERS = frozenset({int, float})
_NUMBERS_OR_NULL = frozenset({int, float, type(None)})
NOT_A_ROW = "A row must be an object of named features or a list of values in manifest order."


@dataclass(frozen=True)
class JsonRows:
    """The rows of one JSON request, for the prediction core.

    ``many``: the request sent several rows (or asked for a list answer), so
    errors are keyed by row index; one row's errors are keyed by field.
    ``numbers_only``: the body they came from holds no value but numbers (see
    ``service.api.body.JsonBody``), so their values need no type check.
    """

    rows: Sequence[Any]
    many: bool = True
    numbers_only: bool = False

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, rules: RuleSet, *, strict: bool = True) -> Checked:
        return check_rows(rules, self.rows, strict=strict, numbers_only=self.numbers_only)

    def refuse(self, errors: RowErrors) -> InvalidInput:
        if not self.many:
            fields = errors[0]
            return InvalidInput(
                f"Invalid input: {listing(list(fields))}; see 'errors' for each field.", fields
            )
        return InvalidInput(
            f"{len(errors)} of {len(self.rows)} rows are invalid; see 'errors' by row index.",
            {str(index): fields for index, fields in errors.items()},
        )


def check_rows(
    rules: RuleSet, rows: Sequence[Any], *, strict: bool = True, numbers_only: bool = False
) -> Checked:
    """Judge ``rows``; with ``strict``, a batch with errors gets no matrix (nothing is predicted).
    ``numbers_only``: every value in them is known to be a number, an array or an object."""
    doubtful = _vectorised(rules, rows, numbers_only)
    if isinstance(doubtful, np.ndarray):
        return Checked.all_valid(doubtful)
    indexes = range(len(rows)) if doubtful is None else doubtful
    errors: RowErrors = {}
    loaded: dict[int, list[Any]] = {}
    for index in indexes:
        values, row_errors = exact_row(rules, rows[index])
        if row_errors:
            errors[index] = row_errors
        else:
            loaded[index] = values
    if errors and strict:
        return Checked.refused(len(rows), errors)
    # Every row the numbers doubted passed after all (an exact integer, say), or
    # the valid rows of a partial batch: the matrix from their exact values (a
    # row the numbers passed is loaded by the exact rules too, for the same matrix).
    values = [
        loaded[index] if index in loaded else exact_row(rules, row)[0]
        for index, row in enumerate(rows)
        if index not in errors
    ]
    return Checked.partly(len(rows), rules.assemble_rows(values), errors)


def exact_row(rules: RuleSet, row: Any) -> tuple[list[Any], dict[str, list[str]]]:
    """(the row's values in manifest order, {}) or ([], its errors by field): the exact rules."""
    if isinstance(row, list):
        if len(row) != rules.width:
            expected = f"Expected {rules.width} values in manifest order ({listing(rules.names)})"
            return [], {ROW_ERROR_KEY: [f"{expected}, got {len(row)}."]}
        row = dict(zip(rules.names, row, strict=True))
    elif not isinstance(row, dict):
        return [], {ROW_ERROR_KEY: [NOT_A_ROW]}
    unknown = row.keys() - rules.known
    if unknown:
        # Named here, in the body's order, rather than by the schema: it would
        # build its error for each of (perhaps) hundreds of thousands of keys
        # more slowly than the request took to arrive.
        known = {key: value for key, value in row.items() if key not in unknown}
        _, errors = exact_row(rules, known)
        messages = [rules.unknown_message]  # one list shared by every key
        return [], {**errors, **{key: messages for key in row if key in unknown}}
    try:
        loaded = rules.schema.load(row)
    except ValidationError as error:
        return [], error.normalized_messages()
    return [loaded[name] for name in rules.names], {}


# --- The vectorised way -------------------------------------------------------------


def _vectorised(rules: RuleSet, rows: Sequence[Any], numbers_only: bool) -> np.ndarray | list[int] | None:
    """The matrix when every row passes; else the rows that may not (a list); None: ask the exact rules."""
    if numbers_only and rules.numeric_only:
        # Rows of a body holding only numbers, arrays and objects: a float matrix of the
        # manifest's width can only have come from lists of as many numbers, which is
        # what ``_table`` would have found, one row at a time, before the same conversion.
        values = _float_matrix(rows)
        if values is not None and values.shape[1] == rules.width:
            return _judged(rules, values, _NUMBERS)
    table = _table(rules, rows)
    if table is None:
        return None
    if rules.numeric_only:
        return _numbers(rules, table, numbers_only)
    return _columns(rules, table)


def _table(rules: RuleSet, rows: Sequence[Any]) -> list[Any] | None:
    """The rows as sequences of values in manifest order, or None if they are not all regular."""
    kinds = set(map(type, rows))
    if kinds == {list}:
        return list(rows) if set(map(len, rows)) == {rules.width} else None
    if kinds == {dict}:
        # Exactly the manifest's features: as many keys, and each one present.
        if set(map(len, rows)) != {rules.width}:
            return None
        try:
            return list(map(rules.pick, rows))
        except KeyError:
            return None
    return None


def _numbers(rules: RuleSet, table: list[Any], numbers_only: bool) -> np.ndarray | list[int] | None:
    # Without a type check, ints are assumed to be among the numbers (see ``exact_below``).
    kinds = _NUMBERS if numbers_only else set(map(type, chain.from_iterable(table)))
    if not kinds <= _NUMBERS_OR_NULL:
        return None
    values = _float_matrix(table)
    return None if values is None else _judged(rules, values, kinds)


def _float_matrix(rows: Sequence[Any]) -> np.ndarray | None:
    """Rows of numbers (or null, which becomes NaN: JSON has no NaN of its own) as a float
    matrix; None when they are not rows of one length of numbers."""
    try:
        values = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer no float can hold: the exact rules word it
        return None
    except (ValueError, TypeError):  # a value that is an array or an object (numbers_only)
        return None
    if values.ndim != 2:  # values that are arrays of one length (numbers_only)
        return None
    return values


def _judged(rules: RuleSet, values: np.ndarray, kinds: frozenset[type] | set[type]) -> np.ndarray | list[int]:
    missing = np.isnan(values) if type(None) in kinds else None
    passes = rules.numbers_pass(values, exact_below=int in kinds, missing=missing).all(axis=1)
    if not passes.all():
        return np.flatnonzero(~passes).tolist()
    return rules.assemble(values, len(values))


def _columns(rules: RuleSet, table: list[Any]) -> np.ndarray | list[int] | None:
    """A model with boolean or category features: column by column."""
    rows = len(table)
    passes = np.ones(rows, dtype=bool)
    columns: list[Any] = []
    for index, (feature, column) in enumerate(zip(rules.features, zip(*table, strict=True), strict=True)):
        kinds = set(map(type, column))
        # A null is judged here only where the feature is nullable; elsewhere
        # the exact rules word why it fails.
        null = {type(None)} if feature.nullable else set()
        if feature.type == "category":
            if not kinds <= {str} | null:
                return None
            passes &= rules.category_passes(index, column)
            columns.append(column)
        elif feature.type == "bool":
            if not kinds <= {bool} | null:
                return None
            columns.append(column)
        else:
            if not kinds <= _NUMBERS | null:
                return None
            try:
                values = np.array(column, dtype=np.float64)
            except OverflowError:
                return None
            missing = np.isnan(values)[:, None] if null and type(None) in kinds else None
            passes &= rules.numbers_pass(values[:, None], index, exact_below=int in kinds, missing=missing)[
                :, 0
            ]
            columns.append(values)
    if not passes.all():
        return np.flatnonzero(~passes).tolist()
    return rules.assemble(columns, rows)
