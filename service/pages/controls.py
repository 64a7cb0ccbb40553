"""How a model's manifest reads on its page: headline metrics, dates, one control per feature.

Plain functions from the model layer's types to what the templates draw; no
request, no Flask.
"""

from __future__ import annotations

import math
from typing import Any

from service.models.manifest import Feature, Manifest

# How the headline metrics read on the page.
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "f1_macro": "F1 (macro)",
    "roc_auc": "ROC AUC",
    "r2": "R²",
    "mae": "MAE",
    "rmse": "RMSE",
}
HEADLINE_METRICS = 3
TASK_LABELS = {
    "classification": "Classification",
    "regression": "Regression",
    "outlier_detection": "Outlier detection",
    "clustering": "Clustering",
}
# Slider positions per feature range, roughly: the step is the power of ten nearest span/100.
SLIDER_STEPS = 100


def headline(metrics: dict[str, float], limit: int | None = HEADLINE_METRICS) -> list[dict[str, str]]:
    """The first metrics (all when ``limit`` is None) with their labels and four significant digits."""
    shown = list(metrics.items()) if limit is None else list(metrics.items())[:limit]
    return [
        {"key": key, "label": METRIC_LABELS.get(key, key), "value": f"{value:.4g}"} for key, value in shown
    ]


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def csv_outputs(manifest: Manifest, has_probabilities: bool) -> tuple[list[str], str]:
    """The columns a CSV answer adds before ``error``, and what they hold, in a few words."""
    if manifest.targets:
        return [f"prediction_{target}" for target in manifest.targets], "the predicted value of each target"
    if manifest.task == "outlier_detection":
        return ["prediction", "score"], "1, or -1 for an outlier, and the decision function's score"
    if manifest.task == "clustering":
        return ["prediction"], "the cluster's index"
    if manifest.task == "regression":
        return ["prediction"], "the predicted value"
    if has_probabilities:
        return ["prediction", "probability_…"], "the predicted class, and a probability column per class"
    return ["prediction"], "the predicted class"


# How the form introduces the row it opens with, by where the typical values came from.
_TYPICAL_ROW_TEXTS = {
    "training_data": "The form opens with a typical row of the training data: each feature's median or most "
    "frequent value.",
    "sample": "The form opens with a typical row of the sample given when the model was added: each "
    "feature's median or most frequent value.",
}


def typical_row_note(manifest: Manifest) -> dict[str, Any]:
    """Whether a typical row is known, and the sentence that says where the form's row comes from."""
    if not manifest.typical_row_known:
        text = (
            "No typical row is known for this model: it was added without a sample, and it keeps no "
            "statistics of its inputs. The form opens with placeholder values (zero, or the first "
            "category), which may be nothing like real data."
        )
        return {"known": False, "text": text}
    origin = manifest.typical_row
    if origin is None:  # a manifest written before it said where its typical values came from
        text = "The form opens with the typical row recorded in the model's manifest."
    elif origin.kind == "estimator":
        text = f"The form opens with values the model learned in training: {origin.source}."
    else:
        text = _TYPICAL_ROW_TEXTS[origin.kind]
    return {"known": True, "text": text}


def date(timestamp: str | None) -> str | None:
    """The date part of an ISO 8601 timestamp, which is how a person reads it."""
    return timestamp[:10] if timestamp else None


def _number(value: float, kind: str) -> str:
    """A bound or value as an HTML number attribute: integers bare, floats round-tripping."""
    if kind == "int":
        return str(int(value))
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _slider_step(low: float, high: float) -> str:
    span = high - low
    if span <= 0:
        return "any"
    exponent = math.floor(math.log10(span / SLIDER_STEPS))
    return f"{10.0**exponent:.{max(0, -exponent)}f}" if exponent < 0 else str(10**exponent)


def control(index: int, feature: Feature) -> dict[str, Any]:
    """What the template needs to draw one feature's control(s)."""
    value = feature.example_value()
    control: dict[str, Any] = {
        "id": f"f{index}",
        "name": feature.name,
        "type": feature.type,
        "description": feature.description,
        "unit": feature.unit,
        "nullable": feature.nullable,  # the control offers an empty choice, sent as null
    }
    if feature.type == "category":
        control.update(kind="select", options=list(feature.categories or ()), value=str(value))
        return control
    if feature.type == "bool":
        if feature.nullable:  # a checkbox cannot say "missing": three choices
            control.update(kind="select", options=["true", "false"], value="true" if value else "false")
        else:
            control.update(kind="checkbox", checked=bool(value))
        return control
    low, high = feature.min, feature.max
    if feature.type == "int":
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    # The box refuses only the declared limits; the observed range (the slider's) is a guide.
    hard_low, hard_high = feature.limits or (None, None)
    control.update(
        kind="number",
        min=None if low is None else _number(low, feature.type),
        max=None if high is None else _number(high, feature.type),
        limit_min=None if hard_low is None else _number(hard_low, "float"),
        limit_max=None if hard_high is None else _number(hard_high, "float"),
        step="1" if feature.type == "int" else "any",
        value=_number(value, feature.type),
        slider=low is not None and high is not None and low < high,
    )
    if control["slider"]:
        control["slider_step"] = "1" if feature.type == "int" else _slider_step(low, high)
    return control
