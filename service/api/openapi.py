"""The OpenAPI 3.1 document, generated from the app's routes and marshmallow schemas.

Each view declares what it answers with ``@documented``; the document walks the
app's URL map, so a route without a declaration fails the tests rather than
going undocumented. Prediction routes are described once per served model, with
that model's row schema (built from its manifest) and a worked example taken
from its typical training row, so the document changes when a model is added.

A model's texts (description, feature names and descriptions) are whatever its
author typed, and description fields are CommonMark that Swagger UI and ReDoc
render as HTML: model texts enter those fields only through ``literal_markdown``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema
from werkzeug.exceptions import TooManyRequests
from werkzeug.routing import Rule

from service import __version__
from service.api.answers import ProblemSchema, compact_schema, prediction_schemas
from service.api.auth import HEADER as API_KEY_HEADER
from service.api.auth import guard_of
from service.api.limits import rate_limited
from service.api.problems import INTERNAL_ERROR, PROBLEM_MEDIA_TYPE, V2_STATUSES, ProblemType, problem_type
from service.api.request_ids import HEADER as REQUEST_ID_HEADER
from service.errors import NotAuthenticated, NotPermitted
from service.models import LoadedModel
from service.models.rules import observed_range
from service.v2.schemas import V2ErrorSchema, V2InferenceRequestSchema

OPENAPI_VERSION = "3.1.0"
# On prediction answers: what computed them (see service.models.onnx_runtime).
RUNTIME_HEADER = "X-Model-Runtime"


# CommonMark's ASCII punctuation: any of it may be backslash-escaped, and an escaped
# character is always literal text (https://spec.commonmark.org/0.31.2/#backslash-escapes).
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def literal_markdown(text: str) -> str:
    """Plain text as CommonMark that renders exactly that text, markup-free.

    Every ASCII punctuation character is backslash-escaped: every construct of
    CommonMark and of GitHub's Markdown (HTML, links, images, emphasis, code,
    entities, headings, lists, tables, www. autolinks) needs one unescaped.
    Escaping only ``<``, ``>`` and ``&`` would keep HTML out but still turn
    ``[x](url)`` into a link.
    """
    return _ASCII_PUNCTUATION.sub(r"\\\1", text)


@dataclass(frozen=True)
class OperationDoc:
    summary: str
    description: str
    response: Schema | type[Schema] | None
    errors: dict[int, tuple[ProblemType, ...]]  # status -> the problem types a client may meet
    media_type: str
    predict: str | None  # "single" or "batch" for prediction routes
    tag: str
    parameters: dict[str, dict[str, Any]]  # path parameter -> extra JSON Schema keywords
    alternatives: tuple[str, ...]  # other media types the route answers with, e.g. text/html
    request_body: dict[str, Any] | None  # for non-JSON bodies (prediction routes build their own)
    query: type[Schema] | None  # the query string's schema, one parameter per field
    protocol_errors: bool  # errors as the Open Inference Protocol writes them, {"error": message}


def documented(
    summary: str,
    *,
    response: Schema | type[Schema] | None = None,
    errors: tuple[type[Exception], ...] = (),
    media_type: str = "application/json",
    predict: str | None = None,
    tag: str = "models",
    parameters: dict[str, dict[str, Any]] | None = None,
    alternatives: tuple[str, ...] = (),
    request_body: dict[str, Any] | None = None,
    query: type[Schema] | None = None,
    protocol_errors: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach the OpenAPI description of a view; the view's docstring becomes its description.

    ``media_type=""``: the answer has no body (the V2 health routes).
    """

    def attach(view: Callable[..., Any]) -> Callable[..., Any]:
        view.openapi = OperationDoc(  # type: ignore[attr-defined]
            summary=summary,
            description=(view.__doc__ or "").strip(),
            response=response,
            errors=_problems(errors),
            media_type=media_type,
            predict=predict,
            tag=tag,
            parameters=parameters or {},
            alternatives=alternatives,
            request_body=request_body,
            query=query,
            protocol_errors=protocol_errors,
        )
        return view

    return attach


def _problems(errors: tuple[type[Exception], ...]) -> dict[int, tuple[ProblemType, ...]]:
    """The problem types a route may answer with, by status, from ``PROBLEM_TYPES``.

    A route lists the exceptions it may meet; any route may fail unexpectedly (500).
    """
    return _by_status([], errors, INTERNAL_ERROR)


def _by_status(
    kinds: list[ProblemType], errors: tuple[type[Exception], ...], *more: ProblemType
) -> dict[int, tuple[ProblemType, ...]]:
    """``kinds``, then the problem types of ``errors`` and ``more`` not among them, by status."""
    kinds = list(kinds)
    for kind in (*map(problem_type, errors), *more):
        if kind is not None and kind not in kinds:
            kinds.append(kind)
    statuses = sorted({kind.status for kind in kinds})
    return {status: tuple(kind for kind in kinds if kind.status == status) for status in statuses}


def build_document(
    app: Flask, models: list[LoadedModel], default_model: str, max_rows: int
) -> dict[str, Any]:
    spec = APISpec(
        title="scikit-learn model service",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": (
                "Validated predictions from scikit-learn models. Every error is an RFC 9457 "
                "problem (application/problem+json)."
            )
        },
    )
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.schema("V2Error", schema=V2ErrorSchema)
    spec.components.schema("V2InferenceRequest", schema=V2InferenceRequestSchema)
    spec.components.header(
        REQUEST_ID_HEADER,
        {
            "description": "The request's id: the client's own if well-formed, else a new one.",
            "schema": {"type": "string"},
        },
    )
    spec.components.header(
        RUNTIME_HEADER,
        {
            "description": "What computed the answer: `onnx` (the model's compiled artifact) or `sklearn`.",
            "schema": {"type": "string", "enum": ["onnx", "sklearn"]},
        },
    )
    per_model = {model.name: _ModelParts.register(spec, model, max_rows) for model in models}
    # Tags in reading order: the default model first, then the others, then the rest.
    for name in sorted(per_model, key=lambda name: (name != default_model, name)):
        description = per_model[name].model.manifest.description or ""
        spec.tag({"name": name, "description": literal_markdown(description)})
    spec.tag({"name": "models", "description": "The served models and their metadata."})
    spec.tag({"name": "health", "description": "Liveness and readiness probes."})
    spec.tag({"name": "docs", "description": "This documentation."})
    spec.tag(
        {
            "name": "v2",
            "description": "The Open Inference Protocol (KServe V2), with Triton's binary tensor extension. "
            'Errors are `{"error": message}`.',
        }
    )

    guard = guard_of(app)
    if guard is not None:
        spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": API_KEY_HEADER})
        spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        doc: OperationDoc | None = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if doc is None:
            continue
        security = None
        blueprint = rule.endpoint.rpartition(".")[0] or None
        added: list[type[Exception]] = []
        if guard is not None and guard.protects(blueprint):
            security = [{"ApiKey": []}, {"Bearer": []}]
            added.append(NotAuthenticated)
            if guard.names_a_model(rule.endpoint, rule.arguments):
                added.append(NotPermitted)
        if rate_limited(app, blueprint):
            added.append(TooManyRequests)
        if added:
            doc = _with_errors(doc, added)
        method = next(iter(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}))).lower()
        if doc.predict is None:
            targets = [(_openapi_path(rule), None)]
        elif "name" in rule.arguments:
            targets = [(rule.rule.replace("<name>", name), parts) for name, parts in per_model.items()]
        else:
            targets = [(rule.rule, per_model[default_model])] if default_model in per_model else []
        for path, parts in targets:
            operation = _operation(doc, rule) if parts is None else parts.operation(doc, rule.endpoint)
            if security is not None:
                operation["security"] = security
            spec.path(path=path, operations={method: operation})
    return spec.to_dict()


def _with_errors(doc: OperationDoc, errors: list[type[Exception]]) -> OperationDoc:
    """The route's own problems and those the app adds to it (keys, rate limits)."""
    own = [kind for kinds in doc.errors.values() for kind in kinds]
    return replace(doc, errors=_by_status(own, tuple(errors)))


def _openapi_path(rule: Rule) -> str:
    path = rule.rule
    for argument in rule.arguments:
        path = path.replace(f"<path:{argument}>", f"{{{argument}}}").replace(
            f"<{argument}>", f"{{{argument}}}"
        )
    return path


def _responses(doc: OperationDoc, ok: dict[str, Any]) -> dict[str, Any]:
    headers = {REQUEST_ID_HEADER: {"$ref": f"#/components/headers/{REQUEST_ID_HEADER}"}}
    answered = headers
    if doc.predict is not None:
        answered = {**headers, RUNTIME_HEADER: {"$ref": f"#/components/headers/{RUNTIME_HEADER}"}}
    responses = {"200": {**ok, "headers": answered}}
    for status, kinds in doc.errors.items():
        if doc.protocol_errors:
            status = V2_STATUSES.get(status, status)
            # The protocol's error object has no type to name: the kinds by their titles.
            described = " ".join(f"{kind.title}." for kind in kinds)
            if str(status) in responses:  # 422 joins 400
                described = f"{responses[str(status)]['description']} {described}"
            responses[str(status)] = {
                "description": described,
                "headers": headers,
                "content": {"application/json": {"schema": "V2Error"}},
            }
            continue
        responses[str(status)] = {
            "description": " ".join(f"`/problems/{kind.slug}`: {kind.when}" for kind in kinds),
            "headers": headers,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": "Problem"}},
        }
    return responses


def _operation(doc: OperationDoc, rule: Rule) -> dict[str, Any]:
    content: dict[str, Any]
    if not doc.media_type:
        content = {}
    elif doc.response is not None:
        content = {doc.media_type: {"schema": doc.response}}
    else:
        content = {doc.media_type: {"schema": {"type": "string"}}}
    for media_type in doc.alternatives:
        content[media_type] = {"schema": {"type": "string"}}
    operation: dict[str, Any] = {
        "summary": doc.summary,
        "description": doc.description,
        "tags": [doc.tag],
        "operationId": rule.endpoint.replace(".", "_"),
        "responses": _responses(
            doc, {"description": "OK", "content": content} if content else {"description": "OK"}
        ),
    }
    if doc.request_body is not None:
        operation["requestBody"] = doc.request_body
    parameters = [
        {
            "name": argument,
            "in": "path",
            "required": True,
            "schema": {"type": "string", **doc.parameters.get(argument, {})},
        }
        for argument in sorted(rule.arguments)
    ]
    parameters += _query_parameters(doc)
    if parameters:
        operation["parameters"] = parameters
    return operation


def _query_parameters(doc: OperationDoc) -> list[dict[str, Any]]:
    # apispec's marshmallow plugin makes one query parameter of each field of the schema.
    return [{"in": "query", "schema": doc.query}] if doc.query is not None else []


@dataclass(frozen=True)
class _ModelParts:
    """The components that describe one model's requests and answers."""

    model: LoadedModel
    single_request: dict[str, Any]
    batch_request: dict[str, Any]
    prediction: str
    predictions: str
    examples: dict[str, Any]

    @classmethod
    def register(cls, spec: APISpec, model: LoadedModel, max_rows: int) -> _ModelParts:
        name = model.name
        row_name = f"{name}.Row"
        spec.components.schema(row_name, schema=model.rules.row_schema)
        properties = spec.components.schemas[row_name]["properties"]
        for feature in model.manifest.features:
            # The row schema also validates, and knows nothing of Markdown: escape here.
            notes = [literal_markdown(feature.description)] if feature.description else []
            seen = observed_range(feature)
            if model.rules.policy == "flag" and seen:
                notes.append(f"In training: {seen}; a value outside is predicted, with a warning.")
            if notes:
                properties[feature.name]["description"] = " ".join(notes)
        feature_names = model.manifest.feature_names
        in_order = literal_markdown(", ".join(feature_names))
        spec.components.schema(
            f"{name}.RowList",
            {
                "type": "array",
                "description": f"One row as values in manifest order: {in_order}.",
                "prefixItems": [properties[feature] for feature in feature_names],
                "minItems": len(feature_names),
                "maxItems": len(feature_names),
            },
        )
        row = {"oneOf": [_ref(row_name), _ref(f"{name}.RowList")]}
        rows = {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
        features = _envelope("features", row)
        instances = _envelope("instances", rows)
        single, many = prediction_schemas(model)
        spec.components.schema(f"{name}.Prediction", schema=single)
        spec.components.schema(f"{name}.Predictions", schema=many)
        spec.components.schema(f"{name}.CompactPredictions", schema=compact_schema(model, many))

        example = model.manifest.example_row()
        in_order = [example[feature] for feature in feature_names]
        examples = {
            "named": {"summary": "A flat object of named features", "value": example},
            "features-list": {"summary": "Values in manifest order", "value": {"features": in_order}},
            "instances": {"summary": "Several rows", "value": {"instances": [example, in_order]}},
        }
        return cls(
            model=model,
            single_request={"oneOf": [_ref(row_name), features, instances]},
            batch_request={"oneOf": [instances, rows, _ref(row_name), features]},
            prediction=f"{name}.Prediction",
            predictions=f"{name}.Predictions",
            examples=examples,
        )

    def operation(self, doc: OperationDoc, endpoint: str) -> dict[str, Any]:
        batch = doc.predict == "batch"
        answer = (
            # The default answer, or the compact one (``format=compact``).
            {"anyOf": [_ref(self.predictions), _ref(f"{self.model.name}.CompactPredictions")]}
            if batch
            else {"oneOf": [_ref(self.prediction), _ref(self.predictions)]}
        )
        examples = dict(self.examples)
        if batch:
            examples = {
                "bare-list": {"summary": "A bare list of rows", "value": [examples["named"]["value"]]},
                **examples,
            }
        manifest = self.model.manifest
        query = _query_parameters(doc)
        return {
            **({"parameters": query} if query else {}),
            "summary": f"{doc.summary}: {manifest.name}",
            "description": f"{literal_markdown(manifest.description or '')}\n\n{doc.description}".strip(),
            "tags": [manifest.name],
            "operationId": f"{endpoint}_{manifest.name}".replace(".", "_").replace("-", "_"),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": self.batch_request if batch else self.single_request,
                        "examples": examples,
                    }
                },
            },
            "responses": _responses(
                doc, {"description": "Predictions", "content": {"application/json": {"schema": answer}}}
            ),
        }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: schema}, "required": [key], "additionalProperties": False}
