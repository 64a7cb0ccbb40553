"""The one place that turns exceptions into RFC 9457 problem-details responses.

Every error a client can see leaves through here, so every error is JSON
(``application/problem+json``) with ``type``, ``title``, ``status`` and
``detail``. Unexpected exceptions are logged with their traceback and answered
with a request id only: internals never reach the client.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from flask.wrappers import Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from service.errors import (
    InvalidInput,
    MalformedRequest,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PredictionFailed,
    ServiceError,
    TooManyColumns,
    TooManyRows,
    UnreadableBody,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# exception -> (status, type slug, title). The most specific class wins.
PROBLEM_TYPES: dict[type[ServiceError], tuple[int, str, str]] = {
    MalformedRequest: (400, "malformed-request", "Malformed request body"),
    UnreadableBody: (400, "unreadable-body", "Request body could not be read"),
    ModelNotFound: (404, "model-not-found", "Model not found"),
    TooManyRows: (413, "too-many-rows", "Too many rows"),
    TooManyColumns: (413, "too-many-columns", "Too many columns"),
    UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    InvalidInput: (422, "invalid-input", "Invalid input"),
    ModelNotReady: (503, "model-not-ready", "Model not ready"),
    PredictionFailed: (500, "prediction-failed", "Prediction failed"),
    ModelLoadError: (500, "model-load-failed", "Model failed to load"),
}


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> Response:
    g.problem_type = slug  # for the error metrics and the log
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_MEDIA_TYPE
    return response


def _lookup(error: ServiceError) -> tuple[int, str, str]:
    for cls in type(error).__mro__:
        if cls in PROBLEM_TYPES:
            return PROBLEM_TYPES[cls]
    return 500, "internal-error", "Internal server error"


def handle_service_error(error: ServiceError) -> Response:
    status, slug, title = _lookup(error)
    extra: dict[str, Any] = {}
    if isinstance(error, InvalidInput):
        if error.errors:
            extra["errors"] = error.errors
        if error.omitted:
            extra["errors_omitted"] = error.omitted
    if status >= 500:
        # The cause (the model's own exception) is for the log, not the client.
        log.error("%s (request id %s)", error.detail, g.get("request_id"), exc_info=error)
        extra["request_id"] = g.get("request_id")
    return problem(status, slug, title, error.detail, **extra)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    slug = (error.name or "error").lower().replace(" ", "-")
    detail = error.description or error.name
    allowed = sorted(getattr(error, "valid_methods", None) or ())
    if isinstance(error, NotFound):
        detail = f"No route matches {request.path}."
    elif isinstance(error, RequestEntityTooLarge):
        detail = f"The request body is larger than the limit of {request.max_content_length} bytes."
    elif isinstance(error, MethodNotAllowed) and allowed:
        detail = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}."
    response = problem(status, slug, error.name, detail)
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def handle_unexpected(error: Exception) -> Response:
    request_id = g.get("request_id")
    log.exception("unexpected error on %s %s (request id %s)", request.method, request.path, request_id)
    return problem(
        500,
        "internal-error",
        "Internal server error",
        f"The service failed to answer this request; quote request id {request_id} when reporting it.",
        request_id=request_id,
    )


def init_app(app: Flask) -> None:
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
