"""Validation of raw text cells (from a CSV file) against a model's manifest, vectorised.

``RowValidator`` (``service.models.inputs``) checks JSON values one row at a
time; a file of a million rows needs the same rules applied to whole columns at
once. ``CellValidator`` takes a block of string cells, rows x manifest features,
and applies the manifest's rules column by column with numpy:

- ``float``: a number as Python's ``float()`` reads it (surrounding whitespace is
  allowed), finite (``nan``, ``inf`` are refused), within ``min``..``max``;
- ``int``: the same, and integral (``3`` and ``3.0`` pass, ``3.5`` does not);
- ``bool``: ``true``/``false`` in any case, or ``1``/``0``;
- ``category``: exactly one of the manifest's categories;
- an empty cell is a missing value, always an error.

Only the cells that fail are looked at one by one, to word their messages with
the very marshmallow fields that validate JSON rows, so a CSV cell and a JSON
value that break the same rule get the same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from marshmallow import ValidationError, fields

from service.models.inputs import feature_field
from service.models.manifest import Feature, Manifest

MISSING_VALUE = "Missing value: the cell is empty."
_TRUE = ("true", "1")
_FALSE = ("false", "0")


@dataclass(frozen=True)
class CellCheck:
    """The outcome for one block of rows.

    ``valid`` marks the rows that passed; ``matrix`` holds those rows only, in
    block order, as ``RowValidator`` would build them (columns in manifest order);
    ``errors`` maps the index of each failed row in the block to
    ``{feature: [messages]}``.
    """

    valid: np.ndarray
    matrix: np.ndarray
    errors: dict[int, dict[str, list[str]]]


class CellValidator:
    """Checks blocks of raw string cells for one model and turns them into its input matrix."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._features = manifest.features
        self._fields = [feature_field(feature) for feature in manifest.features]
        self._categories = [
            frozenset(feature.categories or ()) if feature.type == "category" else frozenset()
            for feature in manifest.features
        ]
        # As RowValidator: a purely numeric model gets float64 (bools as 0/1); a
        # model with a category feature gets an object matrix of Python values.
        self._numeric = all(feature.type != "category" for feature in manifest.features)

    def validate(self, cells: np.ndarray) -> CellCheck:
        """``cells``: an object array of ``str``, rows x features in manifest order."""
        rows = cells.shape[0]
        valid = np.ones(rows, dtype=bool)
        columns: list[np.ndarray] = []
        bad_cells: list[tuple[int, np.ndarray]] = []
        for index, feature in enumerate(self._features):
            column = cells[:, index]
            values, ok = self._check_column(feature, index, column)
            columns.append(values)
            if not ok.all():
                valid &= ok
                bad_cells.append((index, np.flatnonzero(~ok)))
        errors: dict[int, dict[str, list[str]]] = {}
        cache: dict[tuple[int, str], list[str]] = {}
        for index, bad_rows in bad_cells:
            feature, field = self._features[index], self._fields[index]
            for row, cell in zip(bad_rows.tolist(), cells[bad_rows, index].tolist(), strict=True):
                key = (index, cell)
                if key not in cache:
                    cache[key] = _messages(feature, field, cell)
                errors.setdefault(row, {})[feature.name] = cache[key]
        return CellCheck(valid=valid, matrix=self._matrix(columns, valid), errors=errors)

    def _check_column(
        self, feature: Feature, index: int, column: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(parsed values, passes) for one column of cells."""
        if feature.type == "category":
            allowed = self._categories[index]
            ok = np.fromiter(map(allowed.__contains__, column), dtype=bool, count=len(column))
            return column, ok
        if feature.type == "bool":
            lowered = np.strings.lower(column.astype(np.dtypes.StringDType()))
            true = (lowered == _TRUE[0]) | (lowered == _TRUE[1])
            false = (lowered == _FALSE[0]) | (lowered == _FALSE[1])
            return true, true | false
        values, ok = _parse_floats(column)
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(values)
            if feature.type == "int":
                ok &= np.floor(values) == values
            if feature.min is not None:
                ok &= values >= feature.min
            if feature.max is not None:
                ok &= values <= feature.max
        return values, ok

    def _matrix(self, columns: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
        rows = int(valid.sum())
        if self._numeric:
            matrix = np.empty((rows, len(columns)), dtype=np.float64)
            for index, values in enumerate(columns):
                matrix[:, index] = values[valid]
            return matrix
        matrix = np.empty((rows, len(columns)), dtype=object)
        for index, (feature, values) in enumerate(zip(self._features, columns, strict=True)):
            kept = values[valid]
            if feature.type == "int":
                matrix[:, index] = [int(value) for value in kept.tolist()]
            else:  # floats, bools and strings become Python objects, as in a JSON row
                matrix[:, index] = kept.tolist()
        return matrix


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


def _messages(feature: Feature, field: fields.Field, cell: str) -> list[str]:
    """Why ``cell`` fails: the same words the JSON API uses for the same fault."""
    if cell == "":
        return [MISSING_VALUE]
    value: Any = cell
    if feature.is_numeric:
        try:
            value = float(cell)
        except ValueError:
            return [str(field.error_messages["invalid"])]
    elif feature.type == "bool":
        lowered = cell.lower()
        value = True if lowered in _TRUE else False if lowered in _FALSE else cell
    try:
        field.deserialize(value)
    except ValidationError as error:
        messages = error.messages
        return [str(message) for message in messages] if isinstance(messages, list) else [str(messages)]
    return ["Not a valid value."]  # not reached: the vectorised rules and the field agree
