"""The one place that turns exceptions into RFC 9457 problem-details responses.

Every error a client can see leaves through here, so every error is JSON
(``application/problem+json``) with ``type``, ``title``, ``status`` and
``detail``. ``PROBLEM_TYPES`` maps each typed exception to its answer and says
when a client meets it; the OpenAPI document's error responses are written from
it (``service.api.openapi``), so a new kind of error is declared once, here. Unexpected exceptions are
logged with their traceback and answered with a request id only: internals
never reach the client.

The Open Inference Protocol's routes (``/v2``) answer errors as that protocol
says, ``{"error": "message"}``, with the same statuses but one: the protocol
answers values that do not fit the model with 400, not 422. Its gRPC side maps
the same table to gRPC status codes (``grpc_code``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Flask, g, jsonify, request
from flask.wrappers import Response
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    TooManyRequests,
)

from service.errors import (
    InvalidInput,
    InvalidTensor,
    JsonTooLarge,
    MalformedRequest,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    NotAuthenticated,
    NotPermitted,
    NotReady,
    PredictionFailed,
    ServiceError,
    TooManyColumns,
    TooManyRows,
    UnreadableBody,
    UnsupportedMediaType,
    UploadTooLarge,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    status: int
    slug: str  # the answer's type is /problems/SLUG
    title: str
    when: str  # when a client meets it, for the OpenAPI document


# exception -> its answer. The most specific class wins.
PROBLEM_TYPES: dict[type[Exception], ProblemType] = {
    MalformedRequest: ProblemType(
        400,
        "malformed-request",
        "Malformed request body",
        "The body cannot be parsed: not JSON (syntax, encoding, a repeated key), a form without a "
        "boundary, a CSV header that is not UTF-8.",
    ),
    UnreadableBody: ProblemType(
        400,
        "unreadable-body",
        "Request body could not be read",
        "The body cannot be read to its end (broken chunked framing, shorter than its Content-Length).",
    ),
    NotAuthenticated: ProblemType(
        401,
        "unauthorized",
        "Unauthorized",
        "API keys are on (`SERVICE_API_KEYS_FILE`) and the request has no key, or one the service "
        "does not know: send `X-API-Key: KEY` or `Authorization: Bearer KEY`.",
    ),
    NotPermitted: ProblemType(
        403, "forbidden", "Forbidden", "The client's API key is limited to other models."
    ),
    ModelNotFound: ProblemType(404, "model-not-found", "Model not found", "No model of this name is served."),
    NotFound: ProblemType(404, "not-found", "Not Found", "No route matches the path."),
    MethodNotAllowed: ProblemType(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        "The route does not take this method; `Allow` lists those it does.",
    ),
    RequestEntityTooLarge: ProblemType(
        413,
        "request-entity-too-large",
        "Request Entity Too Large",
        "The body is over `SERVICE_MAX_BODY_BYTES`.",
    ),
    UploadTooLarge: ProblemType(
        413,
        "request-entity-too-large",
        "Request Entity Too Large",
        "The upload is over `SERVICE_MAX_UPLOAD_BYTES`.",
    ),
    JsonTooLarge: ProblemType(
        413,
        "json-too-large",
        "JSON over a limit",
        "The body nests deeper than `SERVICE_MAX_JSON_DEPTH` levels or holds a string longer than "
        "`SERVICE_MAX_STRING_BYTES`.",
    ),
    TooManyRows: ProblemType(
        413, "too-many-rows", "Too many rows", "The rows are over `SERVICE_MAX_BATCH_ROWS`."
    ),
    TooManyColumns: ProblemType(
        413,
        "too-many-columns",
        "Too many columns",
        "A CSV header's columns are over `SERVICE_MAX_CSV_COLUMNS`.",
    ),
    TooManyRequests: ProblemType(
        429,
        "too-many-requests",
        "Too Many Requests",
        "The client is over a rate limit (`SERVICE_RATE_LIMIT`, `SERVICE_RATE_LIMIT_ROWS`, "
        "`SERVICE_RATE_LIMIT_READ`); `Retry-After` gives the seconds to wait.",
    ),
    InvalidTensor: ProblemType(
        400,
        "invalid-tensor",
        "Invalid tensor",
        "An Open Inference Protocol tensor does not fit the model: its name, shape, datatype or "
        "element count, or an output the model does not have.",
    ),
    UnsupportedMediaType: ProblemType(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        "The body is not sent as the route's media type.",
    ),
    InvalidInput: ProblemType(
        422,
        "invalid-input",
        "Invalid input",
        "The input does not fit the model; `errors` names each bad field.",
    ),
    PredictionFailed: ProblemType(
        500,
        "prediction-failed",
        "Prediction failed",
        "The model failed on valid input; the answer carries a request id.",
    ),
    ModelLoadError: ProblemType(
        500, "model-load-failed", "Model failed to load", "A model could not be loaded."
    ),
    ModelNotReady: ProblemType(
        503, "model-not-ready", "Model not ready", "The model is not ready: it failed to load."
    ),
    NotReady: ProblemType(
        503, "not-ready", "Not ready", "Some configured model is not ready; `models` says why."
    ),
}


# Any exception the table does not name: a fault of the service, which any route may meet.
INTERNAL_ERROR = ProblemType(
    500, "internal-error", "Internal server error", "A fault in the service; the answer carries a request id."
)


def problem_type(error: type[BaseException]) -> ProblemType | None:
    """The problem type of an exception class: its own, or its nearest base class's."""
    for cls in error.__mro__:
        if cls in PROBLEM_TYPES:
            return PROBLEM_TYPES[cls]
    return None


# A problem's status -> the gRPC status code of the same meaning (by name, from grpc.StatusCode).
GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def grpc_code(error: BaseException) -> str:
    """The gRPC status code's name for ``error``: that of its problem type's status, INTERNAL if none."""
    kind = problem_type(type(error)) or INTERNAL_ERROR
    return GRPC_CODES.get(kind.status, "INTERNAL")


# The Open Inference Protocol's routes, whose errors are {"error": message}.
V2_PREFIX = "/v2"
# The protocol's status for a problem status where the two differ.
V2_STATUSES = {422: 400}


def v2_route() -> bool:
    return request.path == V2_PREFIX or request.path.startswith(V2_PREFIX + "/")


def protocol_message(error: ServiceError) -> str:
    """The error's one-line message for the Open Inference Protocol: its detail, and its faults."""
    return _with_faults(error.detail, error.errors if isinstance(error, InvalidInput) else None)


def _with_faults(detail: str, errors: Any) -> str:
    return f"{detail} {orjson.dumps(errors).decode()}" if errors else detail


def _problem(kind: ProblemType, detail: str, *, status: int | None = None, **extra: Any) -> Response:
    g.problem_type = kind.slug  # for the error metrics and the log
    status = status or kind.status
    if v2_route():
        # One message carries what a problem's members would: the faults, the request id.
        detail = _with_faults(detail, extra.get("errors"))
        if extra.get("request_id") and str(extra["request_id"]) not in detail:
            detail = f"{detail} (request id {extra['request_id']})"
        response = jsonify({"error": detail})
        response.status_code = V2_STATUSES.get(status, status)
        return response
    body = {"type": f"/problems/{kind.slug}", "title": kind.title, "status": status, "detail": detail}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_MEDIA_TYPE
    return response


def handle_service_error(error: ServiceError) -> Response:
    kind = problem_type(type(error)) or INTERNAL_ERROR
    extra: dict[str, Any] = {}
    if isinstance(error, InvalidInput):
        if error.errors:
            extra["errors"] = error.errors
        if error.omitted:
            extra["errors_omitted"] = error.omitted
    if isinstance(error, NotReady):
        extra["models"] = error.models
    if kind.status >= 500 and not isinstance(error, NotReady):
        # The cause (the model's own exception) is for the log, not the client.
        log.error("%s (request id %s)", error.detail, g.get("request_id"), exc_info=error)
        extra["request_id"] = g.get("request_id")
    response = _problem(kind, error.detail, **extra)
    if isinstance(error, NotAuthenticated):
        response.headers["WWW-Authenticate"] = AUTHENTICATE
    return response


# How a client is told to authenticate (RFC 9110, section 11.6.1): a bearer token, which
# X-API-Key carries as well.
AUTHENTICATE = 'Bearer realm="model service"'


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    kind = problem_type(type(error))
    if kind is None:  # another of Werkzeug's: its own name and words
        name = error.name or "Error"
        kind = ProblemType(status, name.lower().replace(" ", "-"), name, "")
    detail = error.description or error.name
    allowed = sorted(getattr(error, "valid_methods", None) or ())
    if isinstance(error, NotFound):
        detail = f"No route matches {request.path}."
    elif isinstance(error, RequestEntityTooLarge):
        detail = f"The request body is larger than the limit of {request.max_content_length} bytes."
    elif isinstance(error, TooManyRequests):
        detail = (
            f"This client is over its rate limit of {error.description}; "
            "try again after the seconds in Retry-After."
        )
    elif isinstance(error, MethodNotAllowed) and allowed:
        detail = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}."
    response = _problem(kind, detail, status=status)
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def handle_unexpected(error: Exception) -> Response:
    request_id = g.get("request_id")
    log.exception("unexpected error on %s %s (request id %s)", request.method, request.path, request_id)
    return _problem(INTERNAL_ERROR, unexpected_detail(request_id), request_id=request_id)


def unexpected_detail(request_id: str | None) -> str:
    """What a client is told of a fault of the service: only the request id to quote."""
    return f"The service failed to answer this request; quote request id {request_id} when reporting it."


def init_app(app: Flask) -> None:
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
