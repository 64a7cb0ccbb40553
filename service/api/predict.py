"""Prediction routes. Plain ``def`` views: prediction is CPU-bound work."""

from __future__ import annotations

from itertools import repeat
from types import MappingProxyType
from typing import Any

import numpy as np
from flask import Blueprint, g, request
from flask.wrappers import Response
from werkzeug.exceptions import RequestEntityTooLarge

from service.api.answers import probability_keys
from service.api.auth import client_name
from service.api.body import JsonLimits, read_json
from service.api.openapi import RUNTIME_HEADER, documented
from service.api.payload import rows_from_body
from service.api.query import BatchQuery, parsed_query
from service.errors import (
    InvalidInput,
    JsonTooLarge,
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
    JsonTooLarge,
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
    sent = request._get_current_object()  # one lookup of the proxy for the whole view
    query = parsed_query(sent, csv=False) if batch_route else _SINGLE_QUERY
    by_row = query["on_error"] == "row"
    compact = query["format"] == "compact"
    current = state()
    model = current.registry.get(name)  # one snapshot for the whole request
    # For the log lines of this request (app and access log).
    note_model(model)
    rows = rows_from_body(
        read_json(sent, JsonLimits(current.settings.max_json_depth, current.settings.max_string_bytes)),
        model.manifest.feature_names,
        batch_route=batch_route,
        max_rows=current.settings.max_batch_rows,
    )
    g.rows_predicted = len(rows)  # what a rows budget charges (service.api.limits)
    with current.core.request(model, g.request_id, client_name()) as scoring:
        scored = scoring.score(rows, partial=by_row)
    answer = (
        render_by_row(model, scored, compact=compact)
        if by_row
        else render_prediction(model, scored.prediction, many=rows.many, compact=compact)
    )
    if scored.warnings:
        # Values served although outside what the model saw: said beside the answer.
        answer["warnings"] = (
            {str(index): found for index, found in scored.warnings.items()}
            if rows.many
            else scored.warnings[0]
        )
    return answer


def note_model(model: LoadedModel) -> None:
    """Name the request's model for its log lines, its access record and the runtime header."""
    found = g._get_current_object()
    found.model, found.model_version = model.name, model.version
    found.model_runtime = model.runtime
    environ = request.environ
    environ["service.model"], environ["service.model_version"] = model.name, model.version


@bp.after_request
def runtime_header(response: Response) -> Response:
    """Prediction answers say what computed them: onnx or sklearn."""
    runtime = g.get("model_runtime")
    if runtime is not None:
        response.headers[RUNTIME_HEADER] = runtime
    return response


# The single-row route's query: it takes no parameters.
_SINGLE_QUERY = MappingProxyType({"on_error": "fail", "format": "objects"})

# The answer's lists that hold one entry per row.
_PER_ROW = ("predictions", "probabilities", "scores")


def render_by_row(model: LoadedModel, scored: Scored, *, compact: bool = False) -> dict[str, Any]:
    """A batch answered row by row (``on_error=row``): each invalid row's entries are null, and
    ``errors`` (present when some row is invalid) names its bad fields by row index."""
    if scored.prediction is None:  # no row is valid
        answer: dict[str, Any] = {"model": model.name, "model_version": model.version}
        if compact:
            answer.update(
                _compact_names(model.manifest.classes, model.manifest.targets, model.has_probabilities)
            )
        answer["predictions"] = []
        if model.has_probabilities:
            answer["probabilities"] = []
    else:
        answer = render_prediction(model, scored.prediction, many=True, compact=compact)
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


def render_prediction(
    model: LoadedModel, prediction: Prediction, *, many: bool, compact: bool = False
) -> dict[str, Any]:
    """The v1 JSON answer: labels, values, outlier labels or clusters (an object of them per row
    for a model with several targets), per-class probabilities if any, outlier scores."""
    if compact:
        return _compact(model, prediction)
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
        probabilities = probability_objects(labels, prediction.probabilities)
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


def probability_objects(labels: list[str], matrix: np.ndarray) -> list[dict[str, float]]:
    """One object per row of ``matrix``, keyed by ``labels`` in column order."""
    if len(matrix) < _MANY_ROWS:
        return [dict(zip(labels, row, strict=True)) for row in matrix.tolist()]
    # For many rows, each dict is built from a tuple of (label, value) pairs zipped
    # column-wise in C: two and a half times quicker than a loop over the rows.
    columns = [zip(repeat(label), column) for label, column in zip(labels, matrix.T.tolist(), strict=True)]
    return list(map(dict, zip(*columns, strict=True)))


# From this many rows on, building probability objects column-wise pays off.
_MANY_ROWS = 16


def _compact(model: LoadedModel, prediction: Prediction) -> dict[str, Any]:
    """A batch's answer with names said once (``format=compact``): the class labels in
    ``classes`` and a probability matrix in their order; the targets in ``targets`` and a list of
    values per row in their order. Numeric arrays go to orjson whole, written from their buffers."""
    has_probabilities = prediction.probabilities is not None
    answer: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        **_compact_names(prediction.classes, prediction.targets, has_probabilities),
    }
    values = prediction.values
    answer["predictions"] = values if values.dtype.kind in "fiub" else values.tolist()
    if has_probabilities:
        answer["probabilities"] = prediction.probabilities
    if prediction.scores is not None:
        answer["scores"] = prediction.scores
    return answer


def _compact_names(classes: Any, targets: Any, has_probabilities: bool) -> dict[str, Any]:
    names: dict[str, Any] = {}
    if has_probabilities:
        names["classes"] = list(classes)
    if targets is not None:
        names["targets"] = list(targets)
    return names
