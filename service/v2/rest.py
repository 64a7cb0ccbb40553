"""The Open Inference Protocol (KServe V2) over HTTP: health, metadata and inference under ``/v2``.

These views only translate: they read the protocol's JSON (and Triton's binary
tensor extension) into an ``InferenceRequest``, call the dataplane, which calls
the one prediction core, and write its answer back in the protocol's form.
Errors are the service's typed exceptions, answered as ``{"error": message}``
by ``service.api.problems``.

The binary tensor extension: with an ``Inference-Header-Content-Length``
header, the body is that many bytes of JSON, then the raw bytes of each input
whose parameter ``binary_data_size`` says how many, in the inputs' order. An
output asked for with the parameter ``binary_data`` (or every output, with the
request's ``binary_data_output``) comes back the same way.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Blueprint, Flask, Request, g, request
from flask.wrappers import Response
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from service.api.auth import client_name
from service.api.body import JsonLimits, body_bytes, check_encoding, decode_json
from service.api.openapi import documented
from service.api.predict import note_model, runtime_header
from service.errors import (
    InvalidInput,
    InvalidTensor,
    JsonTooLarge,
    MalformedRequest,
    ModelNotFound,
    ModelNotReady,
    PredictionFailed,
    TooManyRows,
    UnreadableBody,
    UnsupportedMediaType,
)
from service.state import state
from service.v2 import dataplane
from service.v2.schemas import (
    V2InferenceRequestSchema,
    V2InferenceResponseSchema,
    V2ModelMetadataSchema,
    V2ServerMetadataSchema,
    messages,
)
from service.v2.tensors import from_bytes, from_json

HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH = re.compile(r"[0-9]{1,15}")
BINARY_MEDIA_TYPE = "application/octet-stream"
_REQUEST_SCHEMA = V2InferenceRequestSchema()

# Three blueprints, for the key check and the rate limits: probes, reads, predictions.
health_bp = Blueprint("v2_health", __name__)
bp = Blueprint("v2", __name__)
infer_bp = Blueprint("v2_infer", __name__)
infer_bp.after_request(runtime_header)

INFER_ERRORS = (
    MalformedRequest,
    UnreadableBody,
    InvalidTensor,
    InvalidInput,
    ModelNotFound,
    RequestEntityTooLarge,
    JsonTooLarge,
    TooManyRows,
    UnsupportedMediaType,
    PredictionFailed,
    ModelNotReady,
)
_VERSION = {"version": {"examples": ["1"]}}
_NAME = {"name": {"examples": ["iris"]}}


def _empty(status: int) -> Response:
    """The protocol's health answer: the status says it, the body is empty."""
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


# A health or readiness answer of false: the protocol says 4xx.
NOT_READY = 400


@health_bp.get("/v2/health/live")
@documented("V2 liveness", media_type="", tag="v2", protocol_errors=True)
def live() -> Response:
    """200 while the process answers. Touches no model."""
    return _empty(200)


@health_bp.get("/v2/health/ready")
@documented("V2 readiness", media_type="", tag="v2", protocol_errors=True)
def ready() -> Response:
    """200 when every configured model is loaded and warmed up, else 400 (the protocol's false)."""
    return _empty(200 if dataplane.server_ready(state().registry) else NOT_READY)


@bp.get("/v2")
@documented("V2 server metadata", response=V2ServerMetadataSchema, tag="v2", protocol_errors=True)
def server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return dataplane.server_metadata()


@bp.get("/v2/models/<name>")
@documented(
    "V2 model metadata",
    response=V2ModelMetadataSchema,
    errors=(ModelNotFound, ModelNotReady),
    tag="v2",
    parameters=_NAME,
    protocol_errors=True,
)
def model_metadata(name: str) -> dict[str, Any]:
    """The model's served version, platform, and its input and output tensors (-1: any size)."""
    return dataplane.model_metadata(dataplane.served(state().registry, name))


@bp.get("/v2/models/<name>/versions/<version>")
@documented(
    "V2 model metadata, one version",
    response=V2ModelMetadataSchema,
    errors=(ModelNotFound, ModelNotReady),
    tag="v2",
    parameters={**_NAME, **_VERSION},
    protocol_errors=True,
)
def model_version_metadata(name: str, version: str) -> dict[str, Any]:
    """As the model's metadata, if `version` is the version served."""
    return dataplane.model_metadata(dataplane.served(state().registry, name, version))


@bp.get("/v2/models/<name>/ready")
@documented(
    "V2 model readiness",
    media_type="",
    errors=(ModelNotFound,),
    tag="v2",
    parameters=_NAME,
    protocol_errors=True,
)
def model_ready(name: str) -> Response:
    """200 when the model is loaded and warmed up, 400 when it failed to load, 404 if not served."""
    return _empty(200 if dataplane.served(state().registry, name).ready else NOT_READY)


@bp.get("/v2/models/<name>/versions/<version>/ready")
@documented(
    "V2 model readiness, one version",
    media_type="",
    errors=(ModelNotFound,),
    tag="v2",
    parameters={**_NAME, **_VERSION},
    protocol_errors=True,
)
def model_version_ready(name: str, version: str) -> Response:
    """As the model's readiness, if `version` is the version served (404 otherwise)."""
    return _empty(200 if dataplane.served(state().registry, name, version).ready else NOT_READY)


_INFER_BODY = {
    "description": (
        "The protocol's inference request. With the binary tensor extension, the body is "
        f"`{HEADER_LENGTH}` bytes of this JSON followed by the inputs' raw bytes."
    ),
    "required": True,
    "content": {
        "application/json": {"schema": "V2InferenceRequest"},
        BINARY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
    },
}


@infer_bp.post("/v2/models/<name>/infer")
@documented(
    "V2 inference",
    response=V2InferenceResponseSchema,
    errors=INFER_ERRORS,
    tag="v2",
    parameters=_NAME,
    request_body=_INFER_BODY,
    alternatives=(BINARY_MEDIA_TYPE,),
    protocol_errors=True,
)
def infer(name: str) -> Response:
    """Predict the rows of the request's tensors: one `[N, n_features]` tensor, or one tensor per
    feature named after it. Outputs: `predict`, and `predict_proba` for a classifier (by default
    both). One bad row refuses the request with 400, naming each fault."""
    return _infer(name, None)


@infer_bp.post("/v2/models/<name>/versions/<version>/infer")
@documented(
    "V2 inference, one version",
    response=V2InferenceResponseSchema,
    errors=INFER_ERRORS,
    tag="v2",
    parameters={**_NAME, **_VERSION},
    request_body=_INFER_BODY,
    alternatives=(BINARY_MEDIA_TYPE,),
    protocol_errors=True,
)
def infer_version(name: str, version: str) -> Response:
    """As inference, if `version` is the version served."""
    return _infer(name, version)


def _infer(name: str, version: str | None) -> Response:
    current = state()
    model = dataplane.loaded(current.registry, name, version)  # one snapshot for the whole request
    note_model(model)
    settings = current.settings
    limits = JsonLimits(settings.max_json_depth, settings.max_string_bytes)
    inference, binary = read_request(request, limits, settings.max_batch_rows)
    g.rows_predicted = max((tensor.rows for tensor in inference.inputs), default=1)
    answer = dataplane.infer(
        current.core,
        model,
        inference,
        request_id=g.request_id,
        client=client_name(),
        max_rows=settings.max_batch_rows,
    )
    return render(answer, binary)


def read_request(
    http: Request, limits: JsonLimits, max_rows: int
) -> tuple[dataplane.InferenceRequest, dict[str, bool]]:
    """The inference request in the body, and which outputs to send as bytes (by name; "" for all)."""
    check_encoding(http)
    if http.mimetype not in ("", "application/json", BINARY_MEDIA_TYPE):
        raise UnsupportedMediaType(
            f"Expected Content-Type: application/json (or {BINARY_MEDIA_TYPE} with the binary tensor "
            f"extension), got {http.mimetype}."
        )
    data = body_bytes(http)
    length = _header_length(http, len(data))
    document = decode_json(data[:length] if length is not None else data, limits).document
    try:
        loaded = _REQUEST_SCHEMA.load(document)
    except ValidationError as error:
        raise InvalidTensor(
            f"The inference request does not follow the protocol: {messages(error)}"
        ) from None
    dataplane.within_rows_limit([item["shape"] for item in loaded["inputs"]], max_rows)
    raw = memoryview(data)[length:] if length is not None else memoryview(b"")
    inputs, offset = [], 0
    for item in loaded["inputs"]:
        size = item["parameters"].get("binary_data_size")
        if size is None:
            inputs.append(from_json(item["name"], item["datatype"], item["shape"], item["data"]))
            continue
        if offset + size > len(raw):
            raise InvalidTensor(
                f"Input {item['name']!r} has binary_data_size {size}, "
                f"but only {len(raw) - offset} bytes are left after the JSON."
            )
        inputs.append(from_bytes(item["name"], item["datatype"], item["shape"], raw[offset : offset + size]))
        offset += size
    if offset != len(raw):
        raise InvalidTensor(
            f"{len(raw) - offset} bytes follow the JSON that no input's binary_data_size claims."
        )
    outputs = loaded.get("outputs")
    binary = {"": loaded["parameters"].get("binary_data_output") is True}
    for item in outputs or ():
        if "binary_data" in item["parameters"]:
            binary[item["name"]] = item["parameters"]["binary_data"]
    inference = dataplane.InferenceRequest(
        inputs=tuple(inputs),
        outputs=None if outputs is None else tuple(item["name"] for item in outputs),
        id=loaded.get("id"),
        parameters=loaded["parameters"],
    )
    return inference, binary


def _header_length(http: Request, size: int) -> int | None:
    sent = http.headers.get(HEADER_LENGTH)
    if sent is None:
        return None
    # ASCII digits only (str.isdigit also takes "²", which int() refuses), and few of them.
    if not _LENGTH.fullmatch(sent.strip()) or int(sent) > size:
        raise MalformedRequest(
            f"{HEADER_LENGTH} must be the number of bytes of JSON at the start of the body (at most {size})."
        )
    return int(sent)


def render(answer: dataplane.InferenceResponse, binary: dict[str, bool]) -> Response:
    """The protocol's JSON answer; outputs asked for as bytes follow it, after a header saying where."""
    outputs, raws = [], []
    for found in answer.outputs:
        item: dict[str, Any] = {"name": found.name, "datatype": found.datatype, "shape": found.shape}
        if binary.get(found.name, binary[""]):
            raw = found.raw()
            item["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        else:
            item["data"] = found.json_data()
        outputs.append(item)
    document: dict[str, Any] = {"model_name": answer.model_name, "model_version": answer.model_version}
    if answer.id is not None:
        document["id"] = answer.id
    if answer.parameters:
        document["parameters"] = answer.parameters
    document["outputs"] = outputs
    head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raws:
        return Response(head, mimetype="application/json")
    response = Response(b"".join([head, *raws]), mimetype=BINARY_MEDIA_TYPE)
    response.headers[HEADER_LENGTH] = str(len(head))
    return response


def init_app(app: Flask) -> None:
    for blueprint in (health_bp, bp, infer_bp):
        app.register_blueprint(blueprint)
