"""A model's rule set: what each feature accepts, compiled once from the manifest when the model loads.

Every reader of rows applies these rules and no others: JSON rows
(``service.models.json_rows``), CSV text cells (``service.models.text_cells``),
and later tensors. A feature's rules are:

- ``float``: a number (a JSON number that is not a boolean; a CSV cell that reads
  as one), finite, within ``min``..``max``;
- ``int``: the same, and integral (``3`` and ``3.0`` pass, ``3.5`` does not); an
  integer beyond 2**53 is compared with the bounds exactly, and -0.0 is the integer 0;
- ``bool``: true or false;
- ``category``: exactly one of the manifest's strings.

Each rule exists in two forms that hold each other to account. The vectorised
form judges whole columns with numpy, which is what makes a large batch cheap.
The exact form is a marshmallow field per feature: it judges one value, words
every message a client reads, and, gathered into the row schema, is the
declaration that documents a row in OpenAPI. Both are built here from the same
``Feature``, so they cannot drift; ``tests/test_rules_agree.py`` checks that the
JSON route, the CSV route and the schema accept and refuse the same rows.

The next rules (missing values for nullable features, a policy for values out of
the training range) belong here too: each reader asks the rule set, never the
manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.errors import listing
from service.models.manifest import Feature, Manifest

LISTED_CATEGORIES = 10  # in the message for a value that is not one of them
# Beyond 2**53 a float no longer holds every integer: an integer that large is
# judged by its exact value, never by the float nearest to it.
EXACT_LIMIT = float(2**53)

# Row index (within the rows judged) -> field -> messages.
RowErrors = dict[int, dict[str, list[str]]]


@dataclass(frozen=True)
class Checked:
    """The verdict on some rows: which pass, the matrix of those that do, why the others fail.

    ``matrix`` holds the valid rows in order, columns in manifest order; it is
    None when rows were judged strictly and some failed (nothing is predicted then).
    """

    valid: np.ndarray
    matrix: np.ndarray | None
    errors: RowErrors

    @classmethod
    def all_valid(cls, matrix: np.ndarray) -> Checked:
        return cls(np.ones(len(matrix), dtype=bool), matrix, {})

    @classmethod
    def refused(cls, rows: int, errors: RowErrors) -> Checked:
        return cls(_valid_mask(rows, errors), None, errors)

    @classmethod
    def partly(cls, rows: int, matrix: np.ndarray, errors: RowErrors) -> Checked:
        return cls(_valid_mask(rows, errors), matrix, errors)


def _valid_mask(rows: int, errors: RowErrors) -> np.ndarray:
    valid = np.ones(rows, dtype=bool)
    valid[list(errors)] = False
    return valid


def _is_json_number(value: Any) -> bool:
    # bool is an int in Python but never a number in JSON.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class JsonFloat(fields.Float):
    """A JSON number. ``fields.Float`` would also take ``"5.1"`` and ``true``."""

    def _validated(self, value: Any) -> float:
        if not _is_json_number(value):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class JsonInteger(fields.Integer):
    """A JSON number with no fractional part: ``3`` and ``3.0`` pass, ``3.5`` and ``"3"`` do not."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not (_is_json_number(value) and isinstance(value, int)):
            raise self.make_error("invalid", input=value)
        try:
            float(value)  # the model computes in floats: 10**400 cannot reach it
        except OverflowError:
            raise self.make_error("too_large", input=value) from None
        return value


class JsonBoolean(fields.Boolean):
    """Only JSON ``true`` and ``false``; ``fields.Boolean`` would also take ``"yes"`` and ``1``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid", input=value)


def feature_field(feature: Feature) -> fields.Field:
    """The marshmallow field that judges one value of ``feature`` and words why it fails."""
    common: dict[str, Any] = {"required": True}
    if feature.description:
        common["metadata"] = {"description": feature.description}
    if feature.type == "category":
        categories = feature.categories or ()
        # The default message lists every category: for a feature with thousands,
        # each bad value's message would be larger than the request.
        error = None
        if len(categories) > LISTED_CATEGORIES:
            error = (
                f"Must be one of the {len(categories)} categories in the model's manifest: "
                f"{listing(categories, LISTED_CATEGORIES)}."
            )
        return fields.String(validate=validate.OneOf(categories, error=error), **common)
    if feature.type == "bool":
        return JsonBoolean(**common)
    bounds = []
    if feature.min is not None or feature.max is not None:
        bounds.append(validate.Range(min=feature.min, max=feature.max))
    number_field = JsonInteger if feature.type == "int" else JsonFloat
    return number_field(validate=bounds, **common)


class RuleSet:
    """One model's feature rules, vectorised and exact, and the matrix its rows become."""

    def __init__(self, manifest: Manifest) -> None:
        features = manifest.features
        self.features: tuple[Feature, ...] = features
        self.names: tuple[str, ...] = manifest.feature_names
        self.width = len(features)
        self.known = frozenset(self.names)
        self.fields: tuple[fields.Field, ...] = tuple(feature_field(feature) for feature in features)
        self.row_schema: type[Schema] = Schema.from_dict(
            dict(zip(self.names, self.fields, strict=True)), name=f"{manifest.name}_row"
        )
        # Loads one named row exactly; ``load`` keeps no state between calls.
        self.schema = self.row_schema(unknown=RAISE)
        self.unknown_message = str(self.schema.error_messages["unknown"])
        # The one choice of matrix: float64 for a purely numeric model (booleans
        # as 0/1); an object matrix of Python values when a category keeps strings.
        self.object_matrix = any(feature.type == "category" for feature in features)
        self.numeric_only = all(feature.is_numeric for feature in features)
        self.pick = itemgetter(*self.names) if self.width > 1 else (lambda row: (row[self.names[0]],))
        self._low = np.array([-np.inf if f.min is None else f.min for f in features], dtype=np.float64)
        self._high = np.array([np.inf if f.max is None else f.max for f in features], dtype=np.float64)
        self._integral = np.array([f.type == "int" for f in features])
        self.categories = tuple(frozenset(f.categories or ()) for f in features)

    # --- Vectorised rules -----------------------------------------------------

    def numbers_pass(
        self, values: np.ndarray, columns: slice | int = slice(None), *, exact_below: bool = True
    ) -> np.ndarray:
        """Which cells of ``values`` (rows x the features at ``columns``, float64) pass.

        Finite, within the bounds, integral where the feature is an integer.
        ``exact_below``: a value at or beyond 2**53 in magnitude does not pass here
        (it came from an integer that the float may not hold exactly) and must be
        judged by its exact value with ``judge``.
        """
        if isinstance(columns, int):
            columns = slice(columns, columns + 1)
        low, high, integral = self._low[columns], self._high[columns], self._integral[columns]
        with np.errstate(invalid="ignore"):
            passes = np.isfinite(values)
            passes &= (values >= low) & (values <= high)
            if exact_below:
                passes &= np.abs(values) < EXACT_LIMIT
            if integral.any():
                whole = values[:, integral]
                passes[:, integral] &= np.floor(whole) == whole
        return passes

    def category_passes(self, index: int, column: Sequence[str]) -> np.ndarray:
        allowed = self.categories[index]
        return np.fromiter(map(allowed.__contains__, column), dtype=bool, count=len(column))

    # --- Exact rules ----------------------------------------------------------

    def judge(self, index: int, value: Any) -> tuple[Any, list[str] | None]:
        """(the value the matrix holds, None) when ``value`` passes feature ``index`` (an int
        stays exact); (None, why it fails, as a client reads it) when it does not."""
        try:
            return self.fields[index].deserialize(value), None
        except ValidationError as error:
            found = error.messages
            return None, [str(message) for message in found] if isinstance(found, list) else [str(found)]

    # --- The matrix -----------------------------------------------------------

    def assemble(self, columns: Sequence[Any], rows: int) -> np.ndarray:
        """The model's input matrix from one column per feature, in manifest order.

        A column is a float64 array (numbers, booleans as 0/1 or bool) or a list
        of the Python values the exact rules load; both give the same matrix. A
        float64 array of rows x features is taken as the matrix itself.
        """
        if not self.object_matrix:
            if isinstance(columns, np.ndarray) and columns.ndim == 2:
                matrix = columns
            else:
                matrix = np.empty((rows, self.width), dtype=np.float64)
                for index, column in enumerate(columns):
                    matrix[:, index] = column
            if self._integral.any():
                matrix[:, self._integral] += 0.0  # -0.0 is the integer 0
            return matrix
        # The Python values the exact rules give: floats, ints, booleans, strings.
        matrix = np.empty((rows, self.width), dtype=object)
        for index, (feature, column) in enumerate(zip(self.features, columns, strict=True)):
            if feature.type == "int":  # int(-0.0) is 0; an exact integer stays exact
                column = [
                    int(value) for value in (column.tolist() if isinstance(column, np.ndarray) else column)
                ]
            elif isinstance(column, np.ndarray):
                column = column.tolist()
            matrix[:, index] = column
        return matrix

    def assemble_rows(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """The matrix from rows of exactly loaded values, in manifest order."""
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * self.width
        return self.assemble(columns, len(rows))
