"""What a fitted estimator does with its input columns: which take missing values, and which
categories its encoders learned and whether they take unknown ones.

A missing value is followed through the fitted steps, column by column:

- an imputer (anything in ``sklearn.impute``) absorbs it;
- a one-hot encoder that learned a missing value as a category absorbs it; an
  ordinal encoder that learned one passes it on as its ``encoded_missing_value``;
- a column a column transformer drops never reaches the model;
- any other step passes it on if its tags say it allows NaN, and refuses it if not.

A column whose missing values are absorbed, or passed all the way through a
final estimator that allows NaN (``HistGradientBoosting*``, trees in recent
scikit-learn), can be nullable. This reads the fitted objects only; it never
predicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from service.models.shapes import first_step, plain

ABSORBED, PASSED, REFUSED = "absorbed", "passed", "refused"
# One-hot encoders with these settings encode a category they never saw as all zeros.
_ONE_HOT_UNKNOWN = ("ignore", "infrequent_if_exist", "warn")


@dataclass(frozen=True)
class EncodedColumn:
    """One column as a fitted encoder knows it."""

    categories: tuple[str, ...]  # the string categories, without a missing value
    accepts_unknown: bool
    missing_value: str | None  # "nan" or "none" when a missing value is one of its categories


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def nullable_columns(estimator: Any, names: Sequence[str]) -> set[str]:
    """The columns (of ``names``, in the estimator's input order) whose missing values it handles."""
    return {name for index, name in enumerate(names) if _fate([estimator], index) != REFUSED}


def encoded_columns(estimator: Any, names: Sequence[str] = ()) -> dict[str, EncodedColumn]:
    """Columns, by name, that go straight to a one-hot or ordinal encoder with string categories:
    the estimator's first step (its input columns are ``names``, in order), or a branch of a
    fitted column transformer that selects columns by name (or, first, by position)."""
    found: dict[str, EncodedColumn] = {}
    first = first_step(estimator)
    if isinstance(first, OneHotEncoder | OrdinalEncoder) and len(names) == len(first.categories_):
        found.update(_encoded(first, list(names)))
    for step in _steps(estimator):
        if not isinstance(step, ColumnTransformer):
            continue
        for _, transformer, columns in getattr(step, "transformers_", []):
            selected = np.atleast_1d(columns).tolist()
            if step is first and names and all(type(column) is int for column in selected):
                selected = [names[column] for column in selected]  # its columns are the model's inputs
            if not all(isinstance(column, str) for column in selected):
                continue
            encoder = next(
                (s for s in _steps(transformer) if isinstance(s, OneHotEncoder | OrdinalEncoder)), None
            )
            if encoder is not None:
                found.update(_encoded(encoder, selected))
    return found


def _encoded(encoder: Any, columns: list[str]) -> dict[str, EncodedColumn]:
    """What ``encoder`` learned of each of ``columns`` (its input columns, in order)."""
    found = {}
    for column, categories in zip(columns, encoder.categories_, strict=True):
        labels = [plain(c) for c in categories]
        known = tuple(label for label in labels if not is_missing(label))
        if not known or not all(isinstance(label, str) for label in known):
            continue
        missing = next((label for label in labels if is_missing(label)), "absent")
        found[str(column)] = EncodedColumn(
            categories=known,
            accepts_unknown=_takes_unknown(encoder),
            missing_value=None if missing == "absent" else "none" if missing is None else "nan",
        )
    return found


def _takes_unknown(encoder: Any) -> bool:
    if isinstance(encoder, OneHotEncoder):
        return encoder.handle_unknown in _ONE_HOT_UNKNOWN
    return getattr(encoder, "handle_unknown", None) == "use_encoded_value"


def _steps(estimator: Any) -> list[Any]:
    """Every estimator nested in pipelines and column transformers, the outer one first."""
    found = [estimator]
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps:
            found.extend(_steps(step))
    elif isinstance(estimator, ColumnTransformer):
        for _, transformer, _ in getattr(estimator, "transformers_", []):
            found.extend(_steps(transformer))
    return found


def _fate(steps: Sequence[Any], column: int | None) -> str:
    """What ``steps``, in order, do with a missing value in input ``column`` (None: at an
    unknown position, after a column transformer has rearranged the columns)."""
    for step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, str) and step == "drop":
            return ABSORBED
        if isinstance(step, Pipeline):
            fate = _fate([inner for _, inner in step.steps], column)
        elif isinstance(step, ColumnTransformer):
            fate = _column_transformer_fate(step, column)
            column = None
        elif type(step).__module__.startswith("sklearn.impute"):
            fate = ABSORBED
        elif isinstance(step, OneHotEncoder | OrdinalEncoder):
            fate = _encoder_fate(step, column)
        else:
            fate = PASSED if _allows_nan(step) else REFUSED
        if fate != PASSED:
            return fate
    return PASSED


def _column_transformer_fate(transformer: ColumnTransformer, column: int | None) -> str:
    if column is None:
        return REFUSED  # which branch it takes is not known: assume the worst
    branches = {name: branch for name, branch, _ in getattr(transformer, "transformers_", [])}
    indices = getattr(transformer, "_transformer_to_input_indices", {})
    for name, selected in indices.items():
        selected = list(np.asarray(selected).tolist())
        if column in selected and name in branches:
            return _fate([branches[name]], selected.index(column))
    return ABSORBED if indices else REFUSED  # selected by no branch: dropped


def _encoder_fate(encoder: Any, column: int | None) -> str:
    categories = getattr(encoder, "categories_", None)
    if column is None or categories is None or column >= len(categories):
        return REFUSED
    if not any(is_missing(value) for value in categories[column].tolist()):
        return REFUSED
    if isinstance(encoder, OrdinalEncoder):
        encoded = encoder.encoded_missing_value
        return PASSED if is_missing(encoded) else ABSORBED
    return ABSORBED


def _allows_nan(step: Any) -> bool:
    try:
        return bool(step.__sklearn_tags__().input_tags.allow_nan)
    except Exception:  # an estimator without scikit-learn's tags says nothing: assume not
        return False
