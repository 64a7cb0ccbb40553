"""Prediction routes. Plain ``def`` views: prediction is CPU-bound work."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from flask.wrappers import Response
from werkzeug.exceptions import RequestEntityTooLarge

from service.api.answers import probability_keys
from service.api.body import read_json
from service.api.openapi import RUNTIME_HEADER, documented
from service.api.payload import rows_from_body
from service.api.query import BatchQuery, on_error
from service.errors import (
    InvalidInput,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    PredictionFailed,
    TooManyRows,
    UnreadableBody,
    UnsupportedMediaType,
    first_errors,
)
from service.models import LoadedModel, Prediction
from service.models.core import Scored
from service.state import state

bp = Blueprint("predict", __name__)


# What a client may meet on a JSON prediction route (the OpenAPI document describes each).
SINGLE_ERRORS = (
    MalformedRequest,
    UnreadableBody,
    ModelNotFound,
    RequestEntityTooLarge,
    TooManyRows,
    UnsupportedMediaType,
    InvalidInput,
    PredictionFailed,
    ModelNotReady,
)


@bp.post("/predict")
@documented("Predict with the default model", predict="single", errors=SINGLE_ERRORS)
def predict_default() -> dict[str, Any]:
    """One row (a flat object of named features, or `{"features": row}`) is answered with
    `prediction`; several rows (`{"instances": [row, ...]}`) with `predictions`, in order.
    A row is an object of named features or a list of values in manifest order."""
    return _predict(state().settings.default_model, batch_route=False)


@bp.post("/predict/batch")
@documented(
    "Predict several rows with the default model", predict="batch", errors=SINGLE_ERRORS, query=BatchQuery
)
def predict_default_batch() -> dict[str, Any]:
    """Like `/predict`, also taking a bare list of rows; always answers with `predictions`.
    With `?on_error=row`, invalid rows are answered with `null` and their faults in `errors`."""
    return _predict(state().settings.default_model, batch_route=True)


@bp.post("/v1/models/<name>/predict")
@documented("Predict", predict="single", errors=SINGLE_ERRORS)
def predict(name: str) -> dict[str, Any]:
    """One row (a flat object of named features, or `{"features": row}`) is answered with
    `prediction`; several rows (`{"instances": [row, ...]}`) with `predictions`, in order.
    A row is an object of named features or a list of values in manifest order."""
    return _predict(name, batch_route=False)


@bp.post("/v1/models/<name>/predict/batch")
@documented("Predict several rows", predict="batch", errors=SINGLE_ERRORS, query=BatchQuery)
def predict_batch(name: str) -> dict[str, Any]:
    """Like `predict`, also taking a bare list of rows; always answers with `predictions`.
    With `?on_error=row`, invalid rows are answered with `null` and their faults in `errors`."""
    return _predict(name, batch_route=True)


def _predict(name: str, *, batch_route: bool) -> dict[str, Any]:
    by_row = batch_route and on_error(request, csv=False) == "row"
    current = state()
    model = current.registry.get(name)  # one snapshot for the whole request
    # For the log lines of this request (app and access log).
    g.model, g.model_version = model.name, model.version
    g.model_runtime = model.runtime
    request.environ["service.model"], request.environ["service.model_version"] = model.name, model.version
    rows = rows_from_body(
        read_json(request),
        model.manifest.feature_names,
        batch_route=batch_route,
        max_rows=current.settings.max_batch_rows,
    )
    with current.core.request(model, g.request_id) as scoring:
        scored = scoring.score(rows, partial=by_row)
    answer = (
        render_by_row(model, scored)
        if by_row
        else render_prediction(model, scored.prediction, many=rows.many)
    )
    if scored.warnings:
        # Values served although outside what the model saw: said beside the answer.
        answer["warnings"] = (
            {str(index): found for index, found in scored.warnings.items()}
            if rows.many
            else scored.warnings[0]
        )
    return answer


@bp.after_request
def _runtime_header(response: Response) -> Response:
    """Prediction answers say what computed them: onnx or sklearn."""
    if "model_runtime" in g:
        response.headers[RUNTIME_HEADER] = g.model_runtime
    return response


# The answer's lists that hold one entry per row.
_PER_ROW = ("predictions", "probabilities", "scores")


def render_by_row(model: LoadedModel, scored: Scored) -> dict[str, Any]:
    """A batch answered row by row (``on_error=row``): each invalid row's entries are null, and
    ``errors`` (present when some row is invalid) names its bad fields by row index."""
    if scored.prediction is None:  # no row is valid
        answer: dict[str, Any] = {"model": model.name, "model_version": model.version, "predictions": []}
        if model.has_probabilities:
            answer["probabilities"] = []
    else:
        answer = render_prediction(model, scored.prediction, many=True)
    valid = scored.valid.tolist()
    for key in _PER_ROW:
        if key in answer:
            given = iter(answer[key].tolist() if hasattr(answer[key], "tolist") else answer[key])
            answer[key] = [next(given) if ok else None for ok in valid]
    if scored.errors:
        listed, omitted = first_errors({str(index): fields for index, fields in scored.errors.items()})
        answer["errors"] = listed
        if omitted:
            answer["errors_omitted"] = omitted
    return answer


def render_prediction(model: LoadedModel, prediction: Prediction, *, many: bool) -> dict[str, Any]:
    """The v1 JSON answer: labels, values, outlier labels or clusters (an object of them per row
    for a model with several targets), per-class probabilities if any, outlier scores."""
    answer: dict[str, Any] = {"model": model.name, "model_version": model.version}
    # Numbers (a regressor's values, integer class labels) go to orjson as the
    # array itself, written from its buffer; string labels as a list.
    if prediction.targets is not None:
        targets = prediction.targets
        values: Any = [dict(zip(targets, row, strict=True)) for row in prediction.values.tolist()]
    elif prediction.values.dtype.kind in "fiub":
        values = prediction.values
    else:
        values = prediction.values.tolist()
    scores = prediction.scores
    probabilities = None
    if prediction.probabilities is not None:
        labels = probability_keys(prediction.classes)
        probabilities = [dict(zip(labels, row, strict=True)) for row in prediction.probabilities.tolist()]
    if many:
        answer["predictions"] = values
        if probabilities is not None:
            answer["probabilities"] = probabilities
        if scores is not None:
            answer["scores"] = scores
    else:
        answer["prediction"] = values[0]
        if probabilities is not None:
            answer["probabilities"] = probabilities[0]
        if scores is not None:
            answer["score"] = scores[0]
    return answer
