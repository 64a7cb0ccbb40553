"""What a fitted estimator answers: its task, how many outputs it predicts, its class labels.

The task comes from scikit-learn's own tags. The number of outputs comes from
what the fitted estimator records (a list of ``classes_``, ``n_outputs_``, a
regressor's ``coef_``, the ``estimators_`` of a multi-output wrapper); where it
records none of these, from predicting one row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_clusterer, is_outlier_detector, is_regressor
from sklearn.multioutput import ClassifierChain, MultiOutputClassifier, MultiOutputRegressor, RegressorChain
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline

# What each task needs besides predict(): an outlier detector's score is its decision_function.
_NEEDS = {"outlier_detection": ("decision_function",)}
_MULTI_OUTPUT_WRAPPERS = (ClassifierChain, MultiOutputClassifier, MultiOutputRegressor, RegressorChain)


class IntrospectionError(ValueError):
    """The estimator (with the sample, if any) does not say enough to describe it, or cannot be served."""


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so manifests and answers are plain JSON."""
    return value.item() if isinstance(value, np.generic) else value


def first_step(estimator: Any) -> Any:
    """The step that first sees the input columns, through nested pipelines (None if every step
    passes them through)."""
    while isinstance(estimator, Pipeline):
        estimator = next(
            (
                step
                for _, step in estimator.steps
                if not (step is None or (isinstance(step, str) and step == "passthrough"))
            ),
            None,
        )
    return estimator


def final_step(estimator: Any) -> Any:
    """The estimator at the end of (nested) pipelines: the one that predicts."""
    while isinstance(estimator, Pipeline):
        estimator = estimator[-1]
    return estimator


def _shown(estimator: Any) -> str:
    last = final_step(estimator)
    if last is estimator:
        return type(estimator).__name__
    return f"a Pipeline ending in {type(last).__name__}"


def task_of(estimator: Any) -> str:
    """classification, regression, outlier_detection or clustering; else why it cannot be served."""
    if is_classifier(estimator):
        task = "classification"
    elif is_regressor(estimator):
        task = "regression"
    elif is_outlier_detector(estimator):
        task = "outlier_detection"
    elif is_clusterer(estimator):
        task = "clustering"
    else:
        kind = "a transformer" if hasattr(estimator, "transform") else "an estimator"
        raise IntrospectionError(
            f"{_shown(estimator)} is {kind} that is not a classifier, regressor, outlier detector "
            "or clusterer, so it has no prediction to serve."
        )
    if not hasattr(estimator, "predict"):
        kind = {"outlier_detection": "an outlier detector", "clustering": "a clusterer"}.get(task, "a model")
        hint = (
            " (fit LocalOutlierFactor with novelty=True to score new rows)"
            if isinstance(final_step(estimator), LocalOutlierFactor)
            else ""
        )
        raise IntrospectionError(
            f"{_shown(estimator)} is {kind} without predict(): it labels only the rows it was "
            f"fitted on, so it cannot answer new rows{hint}."
        )
    for method in _NEEDS.get(task, ()):
        if not hasattr(estimator, method):
            raise IntrospectionError(
                f"{_shown(estimator)} is an outlier detector without {method}(), "
                "which gives the score the service answers with."
            )
    return task


def declared_outputs(estimator: Any) -> int | None:
    """How many outputs the fitted estimator says it predicts; None if it does not say."""
    last = final_step(estimator)
    classes = getattr(last, "classes_", None)
    if isinstance(classes, list):
        return len(classes)
    outputs = getattr(last, "n_outputs_", None)
    if isinstance(outputs, int | np.integer):
        return int(outputs)
    if isinstance(last, _MULTI_OUTPUT_WRAPPERS) and hasattr(last, "estimators_"):
        return len(last.estimators_)
    coef = getattr(last, "coef_", None)
    if is_regressor(last) and isinstance(coef, np.ndarray):
        # A linear regressor's coef_ is (n_features,) for one output, (n_targets, n_features) for several.
        return 1 if coef.ndim == 1 else coef.shape[0]
    return None


def outputs_of(estimator: Any, task: str, predict_one: Callable[[], Any] | None) -> int:
    """The number of outputs per row: what the estimator declares, else what it predicts for one row.

    Outlier detectors and clusterers always answer one value per row. ``predict_one``
    returns the estimator's prediction for one row; without it (no row to trust),
    one output is assumed and the check after adding a model finds out otherwise.
    """
    if task not in ("classification", "regression"):
        return 1
    declared = declared_outputs(estimator)
    if declared is not None:
        return declared
    if predict_one is None:
        return 1
    try:
        answer = np.asarray(predict_one())
    except Exception:  # the check after adding predicts the sample again and quotes the estimator
        return 1
    return 1 if answer.ndim < 2 else int(answer.shape[1])


def target_names(outputs: int, given: Sequence[str]) -> tuple[str, ...] | None:
    """The manifest's ``targets``: the names given, else y0, y1, ...; None for one output."""
    if given and len(given) != outputs:
        raise IntrospectionError(
            f"the model predicts {outputs} output{'s' if outputs > 1 else ''} per row; --target names "
            f"{len(given)} column{'s' if len(given) > 1 else ''} ({', '.join(given)}): name one per output, "
            "comma-separated, in the order the model was fitted on."
        )
    if outputs == 1:
        return None
    return tuple(given) if given else tuple(f"y{index}" for index in range(outputs))


def class_labels(estimator: Any, outputs: int) -> tuple[Any, ...]:
    """A classifier's labels as plain JSON values; for several outputs, one tuple of labels per output."""
    fitted = getattr(estimator, "classes_", None)
    if fitted is None:
        fitted = getattr(final_step(estimator), "classes_", None)
    if fitted is None:
        raise IntrospectionError(f"{_shown(estimator)} records no classes_; it does not look fitted.")
    per_output = list(fitted) if outputs > 1 else [fitted]
    labels = tuple(tuple(np.asarray(classes).tolist()) for classes in per_output)
    for output in labels:
        odd = [label for label in output if not isinstance(label, str | int | bool)]
        if odd:
            shown = ", ".join(map(repr, odd[:3]))
            kind = "floats" if all(isinstance(label, float) for label in odd) else "other values"
            raise IntrospectionError(
                f"the model's class labels include {kind} ({shown}); only string, integer or boolean "
                "labels can be served, as JSON keeps their type: refit it on such labels."
            )
    return labels if outputs > 1 else labels[0]
