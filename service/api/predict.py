"""Prediction routes. Plain ``def`` views: prediction is CPU-bound work."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request

from service.api import state
from service.api.body import read_json
from service.api.payload import rows_from_body
from service.models import LoadedModel, Prediction

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict_default() -> dict[str, Any]:
    return _predict(state().settings.default_model, batch_route=False)


@bp.post("/predict/batch")
def predict_default_batch() -> dict[str, Any]:
    return _predict(state().settings.default_model, batch_route=True)


@bp.post("/v1/models/<name>/predict")
def predict(name: str) -> dict[str, Any]:
    return _predict(name, batch_route=False)


@bp.post("/v1/models/<name>/predict/batch")
def predict_batch(name: str) -> dict[str, Any]:
    return _predict(name, batch_route=True)


def _predict(name: str, *, batch_route: bool) -> dict[str, Any]:
    current = state()
    model = current.registry.get(name)  # one snapshot for the whole request
    body = read_json(request)
    shaped = rows_from_body(
        body,
        model.manifest.feature_names,
        batch_route=batch_route,
        max_rows=current.settings.max_batch_rows,
    )
    if shaped.many:
        matrix = model.validator.validate_many(shaped.rows)
    else:
        matrix = model.validator.validate_one(shaped.rows[0])
    return render_prediction(model, model.predict(matrix), many=shaped.many)


def render_prediction(model: LoadedModel, prediction: Prediction, *, many: bool) -> dict[str, Any]:
    """The v1 JSON answer: labels or values, and per-class probabilities if any."""
    answer: dict[str, Any] = {"model": model.name, "model_version": model.version}
    values = prediction.values.tolist()
    probabilities = None
    if prediction.probabilities is not None:
        # JSON object keys are strings: 1 and true become "1" and "true".
        labels = [label if isinstance(label, str) else json.dumps(label) for label in prediction.classes]
        probabilities = [dict(zip(labels, row, strict=True)) for row in prediction.probabilities.tolist()]
    if many:
        answer["predictions"] = values
        if probabilities is not None:
            answer["probabilities"] = probabilities
    else:
        answer["prediction"] = values[0]
        if probabilities is not None:
            answer["probabilities"] = probabilities[0]
    return answer
