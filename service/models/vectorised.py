"""The row rules of ``service.models.inputs``, applied to a whole batch at once with numpy.

Checking each value with its marshmallow field costs tens of microseconds per row,
more than most models take to predict it. When a batch is regular (every row a
list of the manifest's length, or every row an object of exactly its features)
and its values have the expected JSON types, the same rules are applied to whole
columns: numbers finite, within ``min``..``max``, integral for ``int`` features;
booleans ``true``/``false``; categories among the manifest's.

This path only ever says "these rows pass" or "these rows may not". Rows that may
not are checked again by the marshmallow schema, which words every message, and a
batch that is irregular or holds a value of another JSON type goes to the schema
whole. So answers and messages are the schema's by construction; a property test
(tests/test_vectorised.py) holds the two paths to the same verdicts and matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from service.models.manifest import Manifest

_NUMBERS = frozenset({int, float})
# Beyond 2**53 a float no longer holds every integer: such a value is left to the
# schema, which compares the exact JSON number with the bounds.
_EXACT_LIMIT = float(2**53)


@dataclass(frozen=True)
class BatchCheck:
    """``matrix`` holds every row (columns in manifest order) when ``doubtful`` is empty;
    otherwise ``doubtful`` lists the rows the schema must judge, and ``matrix`` is None."""

    matrix: np.ndarray | None
    doubtful: list[int]


class VectorisedRows:
    """Whole-batch checks for one model's rows; ``check`` returns None when the schema must see every row."""

    def __init__(self, manifest: Manifest) -> None:
        features = manifest.features
        names = manifest.feature_names
        self._features = features
        self._width = len(features)
        self._pick = itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
        self._numeric_only = all(feature.is_numeric for feature in features)
        # As RowValidator builds it: float64 unless a category feature keeps strings.
        self._object_matrix = any(feature.type == "category" for feature in features)
        self._low = np.array([-np.inf if f.min is None else f.min for f in features], dtype=np.float64)
        self._high = np.array([np.inf if f.max is None else f.max for f in features], dtype=np.float64)
        self._integral = np.array([f.type == "int" for f in features])
        self._any_integral = bool(self._integral.any())
        self._categories = [frozenset(f.categories or ()) for f in features]

    def check(self, rows: list[Any]) -> BatchCheck | None:
        table = self._table(rows)
        if table is None:
            return None
        if self._numeric_only:
            return self._check_numbers(table)
        return self._check_columns(table)

    def _table(self, rows: list[Any]) -> list[Any] | None:
        """The rows as sequences of values in manifest order, or None if they are not all regular."""
        kinds = set(map(type, rows))
        if kinds == {list}:
            return rows if set(map(len, rows)) == {self._width} else None
        if kinds == {dict}:
            # Exactly the manifest's features: as many keys, and each one present.
            if set(map(len, rows)) != {self._width}:
                return None
            try:
                return list(map(self._pick, rows))
            except KeyError:
                return None
        return None

    def _check_numbers(self, table: list[Any]) -> BatchCheck | None:
        kinds = set(map(type, chain.from_iterable(table)))
        if not kinds <= _NUMBERS:
            return None
        try:
            matrix = np.array(table, dtype=np.float64)
        except OverflowError:  # an integer no float can hold: the schema words it
            return None
        passes = self._number_rules(matrix, self._low, self._high, self._integral, int in kinds)
        if self._any_integral:
            matrix[:, self._integral] += 0.0  # -0.0 is read as the integer 0
        return _outcome(matrix, passes)

    @staticmethod
    def _number_rules(
        values: np.ndarray, low: Any, high: Any, integral: np.ndarray, from_integers: bool
    ) -> np.ndarray:
        """Cells of ``values`` (rows x columns) that pass: finite, in range, integral where required.

        ``from_integers``: some values were JSON integers, which a float holds
        exactly only up to 2**53.
        """
        with np.errstate(invalid="ignore"):
            passes = np.isfinite(values)
            passes &= (values >= low) & (values <= high)
            if from_integers:
                passes &= np.abs(values) <= _EXACT_LIMIT
            if integral.any():
                whole = values[:, integral]
                passes[:, integral] &= np.floor(whole) == whole
        return passes

    def _check_columns(self, table: list[Any]) -> BatchCheck | None:
        """A model with boolean or category features: column by column."""
        rows = len(table)
        passes = np.ones(rows, dtype=bool)
        columns: list[Any] = []
        for index, (feature, column) in enumerate(zip(self._features, zip(*table, strict=True), strict=True)):
            kinds = set(map(type, column))
            if feature.type == "category":
                if kinds != {str}:
                    return None
                allowed = self._categories[index]
                passes &= np.fromiter(map(allowed.__contains__, column), dtype=bool, count=rows)
                columns.append(column)
            elif feature.type == "bool":
                if kinds != {bool}:
                    return None
                columns.append(column)
            else:
                if not kinds <= _NUMBERS:
                    return None
                try:
                    values = np.array(column, dtype=np.float64)
                except OverflowError:
                    return None
                rules = self._number_rules(
                    values[:, None],
                    self._low[index],
                    self._high[index],
                    self._integral[index : index + 1],
                    int in kinds,
                )
                passes &= rules[:, 0]
                columns.append(values + 0.0 if feature.type == "int" else values)  # -0.0 is the integer 0
        if not passes.all():
            return BatchCheck(matrix=None, doubtful=np.flatnonzero(~passes).tolist())
        return BatchCheck(matrix=self._assemble(columns, rows), doubtful=[])

    def _assemble(self, columns: list[Any], rows: int) -> np.ndarray:
        if not self._object_matrix:
            return np.array(columns, dtype=np.float64).T.reshape(rows, self._width)
        # The Python values the schema would give: floats, ints, booleans, strings.
        matrix = np.empty((rows, self._width), dtype=object)
        for index, (feature, column) in enumerate(zip(self._features, columns, strict=True)):
            if feature.type == "int":
                matrix[:, index] = [int(value) for value in column.tolist()]
            elif feature.type == "float":
                matrix[:, index] = column.tolist()
            else:
                matrix[:, index] = list(column)
        return matrix


def _outcome(matrix: np.ndarray, passes: np.ndarray) -> BatchCheck:
    rows_pass = passes.all(axis=1)
    if rows_pass.all():
        return BatchCheck(matrix=matrix, doubtful=[])
    return BatchCheck(matrix=None, doubtful=np.flatnonzero(~rows_pass).tolist())
