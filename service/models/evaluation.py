"""Held-out metrics: a model measured on rows it was not trained on (``models add --eval``).

Metrics measured on the sample that describes the features may include the
training rows, and then say more about memory than about skill; a separate
file of held-out rows is what a metric is worth quoting for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from service.errors import listing
from service.models.introspect import sample_metrics
from service.models.manifest import Evaluation, Manifest
from service.models.shapes import IntrospectionError, plain

# Tasks whose metrics ``sample_metrics`` knows.
MEASURED_TASKS = ("classification", "regression")


def with_held_out_metrics(
    manifest: Manifest, estimator: Any, rows: pd.DataFrame, target: str, source: str
) -> Manifest:
    """``manifest`` with metrics measured on ``rows`` (held out), whose ``target`` column is the truth
    (for a model with several outputs, one column per target, comma-separated).

    Raises ``IntrospectionError`` naming ``source`` when the file does not fit
    the model: no target column, missing feature columns, empty or unknown labels.
    """
    if manifest.task not in MEASURED_TASKS:
        raise IntrospectionError(f"--eval measures classifiers and regressors, not a {manifest.task} model")
    names = [target] if target in rows.columns else [name.strip() for name in target.split(",")]
    outputs = len(manifest.targets or ()) or 1
    if len(names) != outputs:
        raise IntrospectionError(
            f"the model predicts {outputs} output{'s' if outputs > 1 else ''} per row; --target names "
            f"{len(names)} column{'s' if len(names) > 1 else ''}: name one per output, comma-separated"
        )
    absent = [name for name in names if name not in rows.columns]
    if absent:
        columns = listing([str(column) for column in rows.columns])
        named = listing([repr(name) for name in absent])
        raise IntrospectionError(
            f"{source} has no target column{'s' if len(absent) > 1 else ''} {named} (its columns: {columns})"
        )
    if rows.empty:
        raise IntrospectionError(f"{source} has no rows")
    classes = manifest.classes or ()
    truths = [
        _truth(
            rows[name],
            manifest.task,
            classes[index] if manifest.targets and classes else classes,
            name,
            source,
        )
        for index, name in enumerate(names)
    ]
    features = _feature_columns(manifest, estimator, rows.drop(columns=names), source)
    truth = truths[0] if len(truths) == 1 else pd.concat(truths, axis=1)
    metrics = sample_metrics(estimator, manifest.task, features, truth)
    return replace(
        manifest, metrics=metrics, evaluation=Evaluation("held_out", rows=len(rows), source=source)
    )


def _truth(column: pd.Series, task: str, classes: Any, name: str, source: str) -> pd.Series:
    """One target column's true values, as the model's labels or as numbers."""
    where = f"the target column {name!r} of {source}"
    empty = int(column.isna().sum())
    if empty:
        raise IntrospectionError(f"{where} has {empty} empty cells")
    if task == "classification":
        return _labels(column, tuple(classes), where)
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.isna().any():
        raise IntrospectionError(f"{where} holds values that are not numbers")
    return numbers


def _feature_columns(manifest: Manifest, estimator: Any, rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The model's feature columns of ``rows``, in manifest order."""
    names = list(manifest.feature_names)
    missing = [name for name in names if name not in rows.columns]
    if not missing:
        return rows[names]
    # A model fitted on arrays, added without a sample, has made-up feature names
    # (x0, x1, ...): its file's columns are taken in order, as a sample's would be.
    made_up = names == [f"x{index}" for index in range(len(names))]
    if made_up and not hasattr(estimator, "feature_names_in_") and len(rows.columns) == len(names):
        return rows.set_axis(names, axis=1)
    if made_up:
        raise IntrospectionError(
            f"the model takes {len(names)} features; {source} has {len(rows.columns)} columns "
            "besides the target"
        )
    raise IntrospectionError(f"{source} lacks the model's feature columns {listing(missing)}")


def _labels(truth: pd.Series, classes: tuple[Any, ...], where: str) -> pd.Series:
    """True labels as the model's classes: a CSV reads the label 1 as a number even if the class is "1"."""
    values = [plain(value) for value in truth]
    known = set(classes)
    if all(value in known for value in values):
        return truth
    by_text = {str(label): label for label in classes}
    unknown = sorted({str(value) for value in values if str(value) not in by_text})
    if unknown:
        raise IntrospectionError(
            f"{where} holds labels the model does not predict: {listing(unknown)} "
            f"(its classes: {listing([str(label) for label in classes])})"
        )
    return pd.Series([by_text[str(value)] for value in values], index=truth.index)
