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

A feature may be nullable: then JSON ``null``, an omitted named feature and an
empty CSV cell are a missing value, passed to the model as it saw missing
values in training (NaN; for a category, NaN or None as the manifest says).

The manifest's ``min``..``max`` is the range observed in training (with a
margin). Under the default range policy (``flag``) it is not a rule: a value
outside it is served, and ``flags`` words a warning for it; only declared
``limits`` refuse. Likewise a category the model never saw is served and
flagged when its encoder handles unknown categories. The ``reject`` policy
makes the observed range and the known categories hard rules again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.config import RANGE_POLICIES
from service.errors import listing
from service.models.manifest import Feature, Manifest

LISTED_CATEGORIES = 10  # in the message for a value that is not one of them
UNSCORABLE = "The model could not score this value, which lies outside its training data"
UNKNOWN_CATEGORY = (
    "Predicted although not a category seen in training (the model's encoder takes unknown ones)."
)
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


def hard_bounds(feature: Feature, policy: str) -> tuple[float | None, float | None]:
    """The bounds that refuse a value: the declared limits, and under ``reject`` the observed range too."""
    low, high = feature.limits or (None, None)
    if policy == "reject":
        low = feature.min if low is None else low if feature.min is None else max(low, feature.min)
        high = feature.max if high is None else high if feature.max is None else min(high, feature.max)
    return low, high


def observed_range(feature: Feature) -> str | None:
    """The range seen in training as people read it ("0 to 0.117"); None for none."""
    low, high = feature.min, feature.max
    if not feature.is_numeric or (low is None and high is None):
        return None
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def range_warning(feature: Feature) -> str:
    return f"Predicted although outside the training data's range ({observed_range(feature)})."


def feature_field(feature: Feature, policy: str = "flag") -> fields.Field:
    """The marshmallow field that judges one value of ``feature`` and words why it fails."""
    common: dict[str, Any] = {"required": True}
    if feature.nullable:
        common = {"required": False, "allow_none": True, "load_default": None}
    if feature.description:
        common["metadata"] = {"description": feature.description}
    if feature.type == "category" and feature.accepts_unknown and policy == "flag":
        return fields.String(**common)
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
    low, high = hard_bounds(feature, policy)
    if low is not None or high is not None:
        bounds.append(validate.Range(min=low, max=high))
    number_field = JsonInteger if feature.type == "int" else JsonFloat
    return number_field(validate=bounds, **common)


class RuleSet:
    """One model's feature rules, vectorised and exact, and the matrix its rows become."""

    def __init__(self, manifest: Manifest, policy: str = "flag") -> None:
        if policy not in RANGE_POLICIES:
            raise ValueError(f"unknown range policy {policy!r}")
        features = manifest.features
        self.features: tuple[Feature, ...] = features
        self.names: tuple[str, ...] = manifest.feature_names
        self.width = len(features)
        self.known = frozenset(self.names)
        self.policy = policy
        self.fields: tuple[fields.Field, ...] = tuple(feature_field(feature, policy) for feature in features)
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
        bounds = [hard_bounds(feature, policy) for feature in features]
        low = np.array([-np.inf if low is None else low for low, _ in bounds], dtype=np.float64)
        high = np.array([np.inf if high is None else high for _, high in bounds], dtype=np.float64)
        # The bounds a passing value lies within, narrowed to what every value must also be:
        # finite (NaN fails any comparison; the largest floats exclude the infinities) and, for
        # ``exact_below``, under 2**53 in magnitude. Two comparisons judge all of it.
        largest = np.finfo(np.float64).max
        self._within = (np.maximum(low, -largest), np.minimum(high, largest))
        self._within_exact = (np.maximum(low, 1 - EXACT_LIMIT), np.minimum(high, EXACT_LIMIT - 1))
        self._integral = np.array([f.type == "int" for f in features])
        self._nullable = np.array([f.nullable for f in features])
        self.nullable = bool(self._nullable.any())
        self.categories = tuple(frozenset(f.categories or ()) for f in features)
        # Categories that any string passes (then flagged when unseen).
        self._open = tuple(f.type == "category" and f.accepts_unknown and policy == "flag" for f in features)
        self._missing = tuple(
            None if f.type == "category" and f.missing_value == "none" else float("nan") for f in features
        )
        self.unscorable: dict[str, list[str]] = {}  # filled with the flag rules
        self._flagging = self._flag_rules(features) if policy == "flag" else None

    # --- Vectorised rules -----------------------------------------------------

    def numbers_pass(
        self,
        values: np.ndarray,
        columns: slice | int = slice(None),
        *,
        exact_below: bool = True,
        missing: np.ndarray | None = None,
    ) -> np.ndarray:
        """Which cells of ``values`` (rows x the features at ``columns``, float64) pass.

        Finite, within the bounds, integral where the feature is an integer.
        ``exact_below``: a value at or beyond 2**53 in magnitude does not pass here
        (it came from an integer that the float may not hold exactly) and must be
        judged by its exact value with ``judge``. ``missing`` marks the cells that
        are missing values (NaN in ``values``): they pass where the feature is nullable.
        """
        if isinstance(columns, int):
            columns = slice(columns, columns + 1)
        low, high = self._within_exact if exact_below else self._within
        integral = self._integral[columns]
        passes = values >= low[columns]
        passes &= values <= high[columns]
        if integral.any():
            whole = values[:, integral]
            passes[:, integral] &= np.floor(whole) == whole
        if missing is not None:
            passes |= missing & self._nullable[columns]
        return passes

    def category_passes(self, index: int, column: Sequence[Any]) -> np.ndarray:
        """Which values of a category column pass: strings it knows (any string, when it takes
        unknown ones), and None where the feature is nullable."""
        if self._open[index]:
            passes = np.fromiter((type(value) is str for value in column), dtype=bool, count=len(column))
        else:
            allowed = self.categories[index]
            passes = np.fromiter(map(allowed.__contains__, column), dtype=bool, count=len(column))
        if self.features[index].nullable:
            passes |= np.fromiter((value is None for value in column), dtype=bool, count=len(column))
        return passes

    # --- Warnings -------------------------------------------------------------

    def _flag_rules(self, features: Sequence[Feature]) -> tuple[Any, ...] | None:
        """What ``flags`` checks: the numeric columns with an observed range, the open categories."""
        ranged = [
            i for i, f in enumerate(features) if f.is_numeric and (f.min is not None or f.max is not None)
        ]
        opened = [i for i, is_open in enumerate(self._open) if is_open]
        if not ranged and not opened:
            return None
        low = np.array([-np.inf if features[i].min is None else features[i].min for i in ranged])
        high = np.array([np.inf if features[i].max is None else features[i].max for i in ranged])
        messages = {i: [range_warning(features[i])] for i in ranged}
        messages.update({i: [UNKNOWN_CATEGORY] for i in opened})
        # When the model fails on flagged values, they are refused with these words.
        self.unscorable = {
            **{features[i].name: [f"{UNSCORABLE} ({observed_range(features[i])})."] for i in ranged},
            **{features[i].name: [f"{UNSCORABLE}: a category it never saw."] for i in opened},
        }
        return np.array(ranged, dtype=np.intp), low, high, opened, messages

    def flags(self, matrix: np.ndarray) -> RowErrors:
        """Warnings for the rows of a valid matrix: values outside the observed range, unseen
        categories an open encoder takes. Keyed by row position in ``matrix``; empty when none."""
        if self._flagging is None or not len(matrix):
            return {}
        ranged, low, high, opened, messages = self._flagging
        found: RowErrors = {}
        if len(ranged):
            # An object matrix holds numbers (a missing one as NaN, see ``assemble``) in these
            # columns; a float matrix whose every column is ranged is compared whole.
            if len(ranged) == self.width and matrix.dtype == np.float64:
                values = matrix
            else:
                values = matrix[:, ranged].astype(np.float64, copy=False)
            outside = values < low
            outside |= values > high
            for row, column in zip(*np.nonzero(outside), strict=True):
                feature = int(ranged[column])
                found.setdefault(int(row), {})[self.names[feature]] = messages[feature]
        for feature in opened:
            known = self.categories[feature]
            for row, value in enumerate(matrix[:, feature].tolist()):
                if isinstance(value, str) and value not in known:
                    found.setdefault(row, {})[self.names[feature]] = messages[feature]
        if len(found) > 1:
            found = dict(sorted(found.items()))
        return found

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
                    matrix[:, index] = column  # a missing value (None) becomes NaN
            if self._integral.any():
                matrix[:, self._integral] += 0.0  # -0.0 is the integer 0
            return matrix
        # The Python values the exact rules give: floats, ints, booleans, strings.
        matrix = np.empty((rows, self.width), dtype=object)
        for index, (feature, column) in enumerate(zip(self.features, columns, strict=True)):
            if isinstance(column, np.ndarray):
                column = column.tolist()
            if feature.type == "int":  # int(-0.0) is 0; an exact integer stays exact
                column = [value if value is None or value != value else int(value) for value in column]
            if feature.nullable:
                missing = self._missing[index]
                column = [missing if value is None or value != value else value for value in column]
            matrix[:, index] = column
        return matrix

    def assemble_rows(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """The matrix from rows of exactly loaded values, in manifest order."""
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * self.width
        return self.assemble(columns, len(rows))
