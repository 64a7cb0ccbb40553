"""The pages' blueprint and views: the home page, and one page per model.

The pages are server-rendered Jinja templates (``templates/pages/``) with a
little plain JavaScript, and every asset comes from this service (``static/``,
both in this package): no CDN, no build step. A model's page predicts through
the same JSON route that programs call (``POST /v1/models/NAME/predict``); there
is no second code path for predictions.

The pages never replace an API answer: a client that prefers JSON (or states no
preference, like ``curl``) gets JSON at ``/`` and ``/models/NAME``; only a client
that prefers ``text/html`` (a browser) gets a page. ``SERVICE_DEMO=off`` leaves
this blueprint out, so both paths answer 404 and the service is an API only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, make_response, render_template, request, url_for
from flask.wrappers import Response
from marshmallow import Schema, fields, validate
from werkzeug.exceptions import NotFound

from service import __version__
from service.api.answers import metadata_schema, probability_keys
from service.api.auth import guard_of
from service.api.metadata import describe
from service.api.openapi import documented
from service.errors import ModelNotFound
from service.models import ServedModel
from service.models.manifest import TASKS, Manifest
from service.pages.controls import control, csv_outputs, date, headline, task_label, typical_row_note
from service.state import state

SERVICE_NAME = "scikit-learn model service"

# Everything a page loads comes from this service; nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class _PagesBlueprint(Blueprint):
    """A blueprint whose static-file view is documented like every other route."""

    @documented(
        "Page assets",
        media_type="*/*",
        errors=(NotFound,),
        tag="pages",
        parameters={"filename": {"examples": ["pages.css"]}},
    )
    def send_static_file(self, filename: str) -> Response:
        """The CSS and JavaScript of the pages, served by the service itself."""
        return super().send_static_file(filename)


# Templates under templates/pages/: a blueprint's templates share one namespace
# with the app's (the API docs' pages), so the folder inside keeps them apart.
bp = _PagesBlueprint(
    "pages", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)
bp.add_app_template_filter(task_label, "task")


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
    metrics_label = fields.String(metadata={"description": "What the metrics were measured on, in words."})
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
                "headline": headline(model.get("metrics") or {}),
                "date": date(model.get("trained_at")),
            }
            for model in models
        ],
        default_model=current.settings.default_model,
    )


@bp.get("/models/<name>")
@documented(
    "A model's page",
    response=metadata_schema(),
    errors=(ModelNotFound,),
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
    has_probabilities = entry.model.has_probabilities
    added_columns, added_meaning = csv_outputs(manifest, has_probabilities)
    return _page(
        "pages/model.html",
        entry=entry,
        manifest=manifest,
        fields=[control(index, feature) for index, feature in enumerate(manifest.features)],
        classes=probability_keys(manifest.classes) if has_probabilities else [],
        added_columns=added_columns,
        added_meaning=added_meaning,
        headline=headline(manifest.metrics, limit=None),
        typical_row=typical_row_note(manifest),
        date=date(manifest.trained_at),
        predict_url=url_for("predict.predict", name=name),
        csv_url=f"/v1/models/{name}/predict/csv",
        metadata_url=url_for("models.model_metadata", name=name),
        **_chrome(),
    )


# --- Helpers -------------------------------------------------------------------------


def _wants_html() -> bool:
    """True only if the client prefers HTML to JSON; ties and no Accept header mean JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _chrome() -> dict[str, Any]:
    # With API keys on, a model's page asks for the key its predictions are sent with.
    return {
        "service_name": SERVICE_NAME,
        "version": __version__,
        "asks_key": guard_of(current_app) is not None,
    }


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
        if manifest.metrics_label:
            model["metrics_label"] = manifest.metrics_label
    if entry.error:
        model["error"] = entry.error
    model["links"] = {
        "page": f"/models/{entry.name}",
        "metadata": f"/v1/models/{entry.name}",
        "predict": f"/v1/models/{entry.name}/predict",
    }
    return model
