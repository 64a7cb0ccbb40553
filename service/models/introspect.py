"""Writing a manifest for an estimator a user trained, by looking at it.

What the fitted estimator knows (task, classes, feature names and count, the
categories its encoders learned) comes from the estimator; what only data can
tell (types, ranges, typical values) comes from an optional sample of rows.
Without a sample, typical values come from what the estimator learned about its
inputs, where it learned something (``learned_rows``), and otherwise are unknown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

from service.models.estimator_inputs import encoded_columns, nullable_columns
from service.models.learned_rows import IGNORED, LearnedRow, learned_row
from service.models.manifest import Artifact, Evaluation, Feature, Manifest, TypicalRow
from service.models.shapes import IntrospectionError, class_labels, outputs_of, target_names, task_of
from service.models.versions import runtime_versions

# Ranges are widened by this share of the observed span on each side, so that a
# value just past the training data is still accepted.
RANGE_MARGIN = 0.1
ARTIFACT_FILE = "model.joblib"
# Rows of the sample that ``models add`` predicts to check a stored model: enough
# to meet most of what a model can trip on, few enough to take no time.
CHECK_ROWS = 100


def _round_out(value: float, decimals: int, *, down: bool) -> float:
    # Round away from the data so the bound still includes it, without
    # printing float noise such as 3.9399999 in the manifest.
    scaled = round(value * 10**decimals, 6)
    return round((math.floor(scaled) if down else math.ceil(scaled)) / 10**decimals, decimals)


def numeric_range(low: float, high: float) -> tuple[float, float]:
    """The observed [low, high] widened by the margin, not below 0 for non-negative data."""
    span = high - low
    pad = span * RANGE_MARGIN if span > 0 else max(abs(high) * RANGE_MARGIN, 1.0)
    widened_low = low - pad
    if low >= 0 > widened_low:
        widened_low = 0.0
    # Keep about three significant digits of the span.
    decimals = max(0, 2 - math.floor(math.log10(pad / RANGE_MARGIN)))
    return (
        _round_out(widened_low, decimals, down=True),
        _round_out(high + pad, decimals, down=False),
    )


def feature_from_series(
    name: str, series: pd.Series, *, description: str | None = None, unit: str | None = None
) -> Feature:
    """Type, range or categories, and typical value of one column of training data."""
    values = series.dropna()
    if values.empty:
        raise IntrospectionError(f"column {name!r} has no values")
    extra = {"description": description, "unit": unit}
    if ptypes.is_bool_dtype(values):
        return Feature(name, "bool", typical=bool(values.mode().iloc[0]), **extra)
    if ptypes.is_numeric_dtype(values):
        low, high = numeric_range(float(values.min()), float(values.max()))
        if ptypes.is_integer_dtype(values):
            return Feature(
                name,
                "int",
                min=math.floor(low),
                max=math.ceil(high),
                typical=round(float(values.median())),
                **extra,
            )
        return Feature(name, "float", min=low, max=high, typical=float(f"{values.median():.6g}"), **extra)
    as_text = values.astype(str)
    return Feature(
        name,
        "category",
        categories=tuple(sorted(as_text.unique())),
        typical=str(as_text.mode().iloc[0]),
        **extra,
    )


def with_input_handling(
    features: list[Feature], estimator: Any, sample: pd.DataFrame | None
) -> list[Feature]:
    """``features`` with what the fitted estimator says of them: the categories its encoders
    learned (and whether they take unknown ones), which columns take missing values."""
    names = [feature.name for feature in features]
    encoded = encoded_columns(estimator, names)
    nullable = nullable_columns(estimator, names)
    if sample is not None:
        nullable |= {name for name in names if sample[name].isna().any()}
    found = []
    for feature in features:
        changes: dict[str, Any] = {}
        column = encoded.get(feature.name)
        if column is not None and feature.type == "category":
            changes["categories"] = column.categories
            changes["accepts_unknown"] = column.accepts_unknown
            if column.missing_value is not None:
                changes["missing_value"] = column.missing_value
            if (
                feature.typical is not None
                and feature.typical not in column.categories
                and not column.accepts_unknown
            ):
                changes["typical"] = column.categories[0]  # the sample's is not one the model knows
        if feature.name in nullable:
            changes["nullable"] = True
        found.append(dataclasses.replace(feature, **changes) if changes else feature)
    return found


def adjust_features(
    manifest: Manifest,
    *,
    nullable: Sequence[str] = (),
    not_nullable: Sequence[str] = (),
    limits: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Manifest:
    """``manifest`` with the features' nullability and hard limits set by hand."""
    limits = limits or {}
    by_name = {feature.name: feature for feature in manifest.features}
    unknown = [name for name in [*nullable, *not_nullable, *limits] if name not in by_name]
    if unknown:
        raise IntrospectionError(
            f"the model has no feature {unknown[0]!r}; its features are {', '.join(by_name)}"
        )
    both = set(nullable) & set(not_nullable)
    if both:
        raise IntrospectionError(f"{sorted(both)[0]!r} cannot be both nullable and not nullable")
    features = []
    for feature in manifest.features:
        changes: dict[str, Any] = {}
        if feature.name in nullable:
            changes["nullable"] = True
        if feature.name in not_nullable:
            changes["nullable"] = False
        if feature.name in limits:
            if not feature.is_numeric:
                raise IntrospectionError(
                    f"{feature.name!r} is a {feature.type} feature: only numbers have limits"
                )
            changes["limits"] = limits[feature.name]
        features.append(dataclasses.replace(feature, **changes) if changes else feature)
    return dataclasses.replace(manifest, features=tuple(features))


def feature_names_of(estimator: Any, sample: pd.DataFrame | None) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
        missing = [] if sample is None else [n for n in names if n not in sample.columns]
        if missing:
            raise IntrospectionError(f"the sample lacks the model's feature columns {missing}")
        return names
    count = getattr(estimator, "n_features_in_", None)
    if sample is not None:
        if count is not None and len(sample.columns) != count:
            raise IntrospectionError(
                f"the model takes {count} features, the sample has {len(sample.columns)} "
                f"columns (after the target): {list(sample.columns)}"
            )
        return [str(c) for c in sample.columns]
    if count is None:
        raise IntrospectionError("the model records no feature names or count; pass a sample CSV")
    return [f"x{index}" for index in range(count)]


def check_rows(manifest: Manifest, sample: pd.DataFrame, limit: int = CHECK_ROWS) -> list[dict[str, Any]]:
    """The first ``limit`` complete rows of the sample, as a client would send them."""
    rows = sample[list(manifest.feature_names)].dropna().head(limit)
    for feature in manifest.features:
        if feature.type == "category":  # the sample's categories were recorded as text
            rows[feature.name] = rows[feature.name].astype(str)
    return rows.to_dict("records")


def _model_rows(estimator: Any, sample: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    return sample if hasattr(estimator, "feature_names_in_") else sample.to_numpy()


def sample_metrics(
    estimator: Any, task: str, sample: pd.DataFrame, target: pd.Series | pd.DataFrame
) -> dict[str, float]:
    """Accuracy (classifiers: for several targets, the share of rows with every target right),
    or R² and MAE (regressors: averaged over the targets)."""
    try:
        predicted = estimator.predict(_model_rows(estimator, sample))
    except Exception as error:  # the estimator's own words are what its author needs
        raise IntrospectionError(
            f"predicting the rows to measure metrics failed: {type(error).__name__}: {error}"
        ) from None
    if task == "classification":
        if isinstance(target, pd.DataFrame):
            right = np.asarray(predicted, dtype=object) == target.to_numpy(dtype=object)
            return {"accuracy": float(right.all(axis=1).mean())}
        return {"accuracy": float(accuracy_score(target, predicted))}
    return {
        "r2": float(r2_score(target, predicted)),
        "mae": float(mean_absolute_error(target, predicted)),
    }


def _target_columns(
    target: str | Sequence[str] | None, sample: pd.DataFrame | None, *, in_sample: bool = True
) -> list[str]:
    """The target columns: ``target`` if the sample has a column of that name, else its comma-separated
    names. ``in_sample``: the sample must hold them (they are measured on it)."""
    if target is None:
        return []
    if isinstance(target, str):
        whole = sample is not None and target in sample.columns
        target = [target] if whole else target.split(",")
    names = [name.strip() for name in target]
    if len(set(names)) != len(names):
        raise IntrospectionError(f"the target columns {', '.join(names)} name a column more than once")
    missing = (
        [] if sample is None or not in_sample else [name for name in names if name not in sample.columns]
    )
    if missing:
        shown = ", ".join(map(repr, missing))
        raise IntrospectionError(f"the sample has no target column{'s' if len(missing) > 1 else ''} {shown}")
    return names


def describe_estimator(
    estimator: Any,
    *,
    name: str,
    version: str,
    sample: pd.DataFrame | None = None,
    target: str | Sequence[str] | None = None,
    description: str | None = None,
    trained_with: dict[str, str] | None = None,
    dataset: dict[str, Any] | None = None,
    trained_at: str | None = None,
    notes: dict[str, tuple[str | None, str | None]] | None = None,
    metrics: dict[str, float] | None = None,
    evaluation: Evaluation | None = None,
    sample_name: str | None = None,
    measure: bool = True,
) -> Manifest:
    """A manifest for ``estimator``; the artifact hash is filled in when it is stored.

    ``target`` names the sample's column of true values, or several (a sequence,
    or comma-separated) for a multi-output model: they name its targets too.
    ``notes`` maps feature names to (description, unit); ``metrics``, when given,
    are recorded as they are (with ``evaluation``, how they were measured)
    instead of being measured on the sample. ``sample_name`` names the sample
    (its file) where the manifest says what came from it. Without ``measure``
    (metrics come from held-out rows instead), ``target`` only names the targets,
    and the sample's target columns, if it has them, are set aside.
    """
    task = task_of(estimator)
    labels = None
    notes = notes or {}
    typical_row = None
    target_columns = _target_columns(target, sample, in_sample=measure)
    if target_columns and task not in ("classification", "regression"):
        raise IntrospectionError(
            f"a {task.replace('_', ' ')} model has no true values to measure: --target is for "
            "classifiers and regressors."
        )
    if sample is not None and target_columns:
        present = [name for name in target_columns if name in sample.columns]
        if measure:
            labels = sample[present[0]] if len(present) == 1 else sample[present]
        sample = sample.drop(columns=present)
    names = feature_names_of(estimator, sample)
    if sample is not None:
        sample = sample[names] if hasattr(estimator, "feature_names_in_") else sample
        sample = sample.set_axis(names, axis=1)
        features = [
            feature_from_series(
                n, sample[n], description=notes.get(n, (None, None))[0], unit=notes.get(n, (None, None))[1]
            )
            for n in names
        ]
        typical_row = TypicalRow("sample", sample_name)
    else:
        encoded = encoded_columns(estimator, names)
        categories = {name: column.categories for name, column in encoded.items()}
        features = [
            Feature(n, "category", categories=categories[n]) if n in categories else Feature(n, "float")
            for n in names
        ]
        learned = learned_row(estimator)
        typical = None if learned is None else _typical_values(features, learned)
        if typical is not None:
            features = [
                dataclasses.replace(f, typical=value) for f, value in zip(features, typical, strict=True)
            ]
            typical_row = TypicalRow("estimator", learned.source)
    features = with_input_handling(features, estimator, sample)
    first = None if sample is None else _model_rows(estimator, sample.iloc[:1])

    def predict_first() -> Any:
        return estimator.predict(first)

    outputs = outputs_of(estimator, task, None if first is None else predict_first)
    targets = target_names(outputs, target_columns)
    if labels is not None and metrics is None:
        metrics = sample_metrics(estimator, task, sample, labels)
        evaluation = Evaluation("sample", rows=len(sample), source=sample_name)
    classes = class_labels(estimator, outputs) if task == "classification" else None
    return Manifest(
        name=name,
        version=version,
        task=task,
        description=description,
        artifact=Artifact(file=ARTIFACT_FILE, sha256="0" * 64),
        trained_with=trained_with or runtime_versions(),
        features=tuple(features),
        classes=classes,
        targets=targets,
        metrics=metrics or {},
        evaluation=evaluation if metrics else None,
        trained_at=trained_at or datetime.now(UTC).isoformat(timespec="seconds"),
        dataset=dataset or {},
        typical_row=typical_row,
    )


def _typical_values(features: list[Feature], learned: LearnedRow) -> list[Any] | None:
    """The learned row as valid values of ``features``; None if any value does not fit its feature."""
    if len(learned.values) != len(features):
        return None
    values = []
    for feature, value in zip(features, learned.values, strict=True):
        if value is IGNORED:
            values.append(feature.example_value())
        elif feature.type == "category":
            if str(value) not in (feature.categories or ()):
                return None
            values.append(str(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
        else:
            return None
    return values
