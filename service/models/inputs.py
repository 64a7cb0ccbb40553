"""Validation of input rows against a model's manifest, and the matrix they become.

A marshmallow schema is built once per model from its manifest. Rows may be
objects of named features or lists of values in manifest order; either way each
value is checked for type, range or category, unknown and missing features are
named, and NaN/Infinity are refused. What comes out is the matrix the model layer
predicts on, columns in manifest order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.errors import InvalidInput, listing
from service.models.manifest import Feature, Manifest
from service.models.vectorised import VectorisedRows

ROW_ERROR_KEY = "_row"
LISTED_CATEGORIES = 10  # in the message for a value that is not one of them


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
    """The marshmallow field that validates one feature's value."""
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


def row_schema(manifest: Manifest) -> type[Schema]:
    """A schema for one row of named features, in manifest order."""
    return Schema.from_dict(
        {feature.name: feature_field(feature) for feature in manifest.features},
        name=f"{manifest.name}_row",
    )


class RowValidator:
    """Checks rows for one model and turns them into its input matrix."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._names = manifest.feature_names
        self._known = frozenset(self._names)
        self._schema = row_schema(manifest)(unknown=RAISE)
        # A purely numeric model gets a float64 matrix (bools become 0/1); one
        # with categories gets an object matrix that keeps the strings.
        self._dtype = np.float64 if all(f.type != "category" for f in manifest.features) else object
        # The same rules over whole columns; the schema words any message.
        self._vectorised = VectorisedRows(manifest)

    def validate_one(self, row: Any) -> np.ndarray:
        """One row -> a 1 x n matrix; ``InvalidInput.errors`` maps field -> messages."""
        checked = self._vectorised.check([row])
        if checked is not None and checked.matrix is not None:
            return checked.matrix
        values, errors = self._check(row)
        if errors:
            detail = f"Invalid input: {listing(list(errors))}; see 'errors' for each field."
            raise InvalidInput(detail, errors)
        return self._matrix([values])

    def validate_many(self, rows: Sequence[Any]) -> np.ndarray:
        """Rows -> an n x k matrix; ``InvalidInput.errors`` maps row index -> field -> messages."""
        checked = self._vectorised.check(list(rows))
        if checked is not None and checked.matrix is not None:
            return checked.matrix
        if checked is not None:
            # Only the doubtful rows need the schema; if it finds them all valid
            # after all, it judges the whole batch below.
            errors = self._errors(rows, checked.doubtful)
            if errors:
                raise self._invalid_rows(errors, len(rows))
        return self._validate_each(rows)

    def _errors(self, rows: Sequence[Any], indices: Sequence[int]) -> dict[str, Any]:
        found = {}
        for index in indices:
            _, row_errors = self._check(rows[index])
            if row_errors:
                found[str(index)] = row_errors
        return found

    @staticmethod
    def _invalid_rows(errors: dict[str, Any], rows: int) -> InvalidInput:
        return InvalidInput(f"{len(errors)} of {rows} rows are invalid; see 'errors' by row index.", errors)

    def _validate_each(self, rows: Sequence[Any]) -> np.ndarray:
        matrix_rows = []
        errors: dict[str, Any] = {}
        for index, row in enumerate(rows):
            values, row_errors = self._check(row)
            if row_errors:
                errors[str(index)] = row_errors
            else:
                matrix_rows.append(values)
        if errors:
            raise self._invalid_rows(errors, len(rows))
        return self._matrix(matrix_rows)

    def _check(self, row: Any) -> tuple[list[Any], dict[str, Any]]:
        if isinstance(row, list):
            if len(row) != len(self._names):
                return [], {
                    ROW_ERROR_KEY: [
                        f"Expected {len(self._names)} values in manifest order "
                        f"({listing(self._names)}), got {len(row)}."
                    ]
                }
            row = dict(zip(self._names, row, strict=True))
        elif not isinstance(row, dict):
            return [], {
                ROW_ERROR_KEY: [
                    "A row must be an object of named features or a list of values in manifest order."
                ]
            }
        unknown = row.keys() - self._known
        if unknown:
            # Named here, in the body's order, rather than by the schema: it
            # would build its error for each of (perhaps) hundreds of thousands
            # of keys more slowly than the request took to arrive.
            known = {key: value for key, value in row.items() if key not in unknown}
            _, errors = self._check(known)
            messages = [self._schema.error_messages["unknown"]]  # one list shared by every key
            return [], {**errors, **{key: messages for key in row if key in unknown}}
        try:
            loaded = self._schema.load(row)
        except ValidationError as error:
            return [], error.normalized_messages()
        return [loaded[name] for name in self._names], {}

    def _matrix(self, rows: list[list[Any]]) -> np.ndarray:
        return np.array(rows, dtype=self._dtype).reshape(len(rows), len(self._names))
