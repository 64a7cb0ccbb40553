"""Pages for people: a home page listing the models, and one page per model to try it.

The pages are server-rendered Jinja templates with a little plain JavaScript,
and every asset comes from this service (``service/static``): no CDN, no build
step. A model's page predicts through the same JSON route that programs call
(``POST /v1/models/NAME/predict``); there is no second code path for predictions.

The pages never replace an API answer: a client that prefers JSON (or states no
preference, like ``curl``) gets JSON at ``/`` and ``/models/NAME``; only a client
that prefers ``text/html`` (a browser) gets a page. ``SERVICE_DEMO=off`` leaves
this blueprint out, so both paths answer 404 and the service is an API only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flask import Blueprint, make_response, render_template, request, url_for
from flask.wrappers import Response
from marshmallow import Schema, fields, validate

from service.api import state
from service.api.health import describe
from service.api.openapi import documented
from service.api.schemas import metadata_schema, probability_keys
from service.errors import ModelNotFound
from service.models import ServedModel
from service.models.manifest import TASKS, Feature, Manifest

SERVICE_NAME = "scikit-learn model service"
STATIC_FOLDER = Path(__file__).resolve().parent.parent / "static"

# Everything a page loads comes from this service; nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)

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
# Slider positions per feature range, roughly: the step is the power of ten nearest span/100.
SLIDER_STEPS = 100


class _PagesBlueprint(Blueprint):
    """A blueprint whose static-file view is documented like every other route."""

    @documented(
        "Page assets",
        media_type="*/*",
        errors=(404,),
        tag="pages",
        parameters={"filename": {"examples": ["pages.css"]}},
    )
    def send_static_file(self, filename: str) -> Response:
        """The CSS and JavaScript of the pages, served by the service itself."""
        return super().send_static_file(filename)


bp = _PagesBlueprint("pages", __name__, static_folder=str(STATIC_FOLDER), static_url_path="/static")


# --- The JSON variants, for the OpenAPI document -----------------------------------


class _HomeModelLinksSchema(Schema):
    page = fields.String(required=True, metadata={"description": "The model's page, for people."})
    metadata = fields.String(required=True)
    predict = fields.String(required=True)


class _HomeModelSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True, allow_none=True)
    ready = fields.Boolean(required=True)
    task = fields.String(validate=validate.OneOf(TASKS))
    description = fields.String(allow_none=True)
    metrics = fields.Dict(keys=fields.String(), values=fields.Float())
    trained_at = fields.String(allow_none=True)
    error = fields.String(metadata={"description": "Why the model is not ready."})
    links = fields.Nested(_HomeModelLinksSchema, required=True)


class HomeSchema(Schema):
    """The service's name and version, every served model, and where to go next."""

    name = fields.String(required=True)
    version = fields.String(required=True)
    default_model = fields.String(required=True)
    models = fields.List(fields.Nested(_HomeModelSchema), required=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


# --- Views ---------------------------------------------------------------------------


@bp.get("/")
@documented("Home", response=HomeSchema, tag="pages", alternatives=("text/html",))
def home() -> dict[str, Any] | Response:
    """The service's name and version and every served model with its task, version, readiness,
    headline metrics and training date. JSON unless the client prefers `text/html`; a browser
    gets the same as an HTML page with links to each model's page, the API docs and the metrics."""
    from service import __version__

    current = state()
    models = [_home_model(entry) for entry in current.registry.entries()]
    links = {
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "metrics": "/metrics",
        "models": "/v1/models",
        "health": "/health",
        "ready": "/ready",
    }
    if not _wants_html():
        return {
            "name": SERVICE_NAME,
            "version": __version__,
            "default_model": current.settings.default_model,
            "models": models,
            "links": links,
        }
    return _page(
        "pages/home.html",
        service_name=SERVICE_NAME,
        version=__version__,
        models=[
            {
                **model,
                "headline": _headline(model.get("metrics") or {}),
                "date": _date(model.get("trained_at")),
            }
            for model in models
        ],
        default_model=current.settings.default_model,
    )


@bp.get("/models/<name>")
@documented(
    "A model's page",
    response=metadata_schema(),
    errors=(404,),
    tag="pages",
    parameters={"name": {"examples": ["iris"]}},
    alternatives=("text/html",),
)
def model_page(name: str) -> dict[str, Any] | Response:
    """For a browser (a client that prefers `text/html`), an HTML page to try the model: a form
    built from its manifest that predicts through `POST /v1/models/{name}/predict`, and a CSV
    upload. Any other client gets the model's metadata as JSON, as from `GET /v1/models/{name}`."""
    if not _wants_html():
        return describe(state().registry.entry(name))
    try:
        entry = state().registry.entry(name)
    except ModelNotFound as error:
        return _page("pages/not_found.html", status=404, message=error.detail, **_chrome())
    if entry.model is None:
        return _page("pages/not_ready.html", status=503, entry=entry, **_chrome())
    manifest = entry.model.manifest
    return _page(
        "pages/model.html",
        entry=entry,
        manifest=manifest,
        fields=[_control(index, feature) for index, feature in enumerate(manifest.features)],
        classes=probability_keys(manifest.classes or ()),
        headline=_headline(manifest.metrics, limit=None),
        date=_date(manifest.trained_at),
        predict_url=url_for("predict.predict", name=name),
        csv_url=f"/v1/models/{name}/predict/csv",
        metadata_url=url_for("health.model_metadata", name=name),
        **_chrome(),
    )


# --- Helpers -------------------------------------------------------------------------


def _wants_html() -> bool:
    """True only if the client prefers HTML to JSON; ties and no Accept header mean JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _chrome() -> dict[str, Any]:
    from service import __version__

    return {"service_name": SERVICE_NAME, "version": __version__}


def _page(template: str, *, status: int = 200, **context: Any) -> Response:
    response = make_response(render_template(template, **context), status)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.after_request
def _vary_on_accept(response: Response) -> Response:
    # "/" and "/models/NAME" answer by Accept: caches must keep the page and the JSON apart.
    if request.endpoint in ("pages.home", "pages.model_page"):
        response.vary.add("Accept")
    return response


def _home_model(entry: ServedModel) -> dict[str, Any]:
    model: dict[str, Any] = {"name": entry.name, "version": entry.version, "ready": entry.ready}
    if entry.model is not None:
        manifest: Manifest = entry.model.manifest
        model.update(
            {
                "task": manifest.task,
                "description": manifest.description,
                "metrics": dict(manifest.metrics),
                "trained_at": manifest.trained_at,
            }
        )
    if entry.error:
        model["error"] = entry.error
    model["links"] = {
        "page": f"/models/{entry.name}",
        "metadata": f"/v1/models/{entry.name}",
        "predict": f"/v1/models/{entry.name}/predict",
    }
    return model


def _headline(metrics: dict[str, float], limit: int | None = HEADLINE_METRICS) -> list[dict[str, str]]:
    shown = list(metrics.items()) if limit is None else list(metrics.items())[:limit]
    return [
        {"key": key, "label": METRIC_LABELS.get(key, key), "value": f"{value:.4g}"} for key, value in shown
    ]


def _date(timestamp: str | None) -> str | None:
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


def _control(index: int, feature: Feature) -> dict[str, Any]:
    """What the template needs to draw one feature's control(s)."""
    value = feature.example_value()
    control: dict[str, Any] = {
        "id": f"f{index}",
        "name": feature.name,
        "type": feature.type,
        "description": feature.description,
        "unit": feature.unit,
    }
    if feature.type == "category":
        control.update(kind="select", options=list(feature.categories or ()), value=str(value))
        return control
    if feature.type == "bool":
        control.update(kind="checkbox", checked=bool(value))
        return control
    low, high = feature.min, feature.max
    if feature.type == "int":
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    control.update(
        kind="number",
        min=None if low is None else _number(low, feature.type),
        max=None if high is None else _number(high, feature.type),
        step="1" if feature.type == "int" else "any",
        value=_number(value, feature.type),
        slider=low is not None and high is not None and low < high,
    )
    if control["slider"]:
        control["slider_step"] = "1" if feature.type == "int" else _slider_step(low, high)
    return control
