"""The OpenAPI document, and Swagger UI and ReDoc served from installed files.

The UI bundles come from the ``openapi-ui-bundles`` package and are served by
the service itself: the docs work on a network with no internet.
"""

from __future__ import annotations

from typing import Any

import openapi_ui_bundles
from flask import Blueprint, current_app, make_response, render_template, send_from_directory
from flask.wrappers import Response
from werkzeug.exceptions import NotFound

from service.api import state
from service.api.openapi import build_document, documented

bp = Blueprint("docs", __name__)

# The pages may load only what this service serves (ReDoc would otherwise fetch
# its logo from a CDN): nothing leaves a network without internet, or any other.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; "
    "font-src 'self' data:; frame-ancestors 'none'"
)

_ASSETS = {
    "swagger": openapi_ui_bundles.swagger_ui.static_path,
    "redoc": openapi_ui_bundles.redoc.static_path,
}


@bp.get("/openapi.json")
@documented("This OpenAPI document", tag="docs")
def openapi_document() -> dict[str, Any]:
    """Generated from the routes and the same marshmallow schemas that validate requests;
    each served model's request schema comes from its manifest."""
    current = state()
    ready = [entry.model for entry in current.registry.entries() if entry.model is not None]
    key = tuple((model.name, model.version, model.loaded_at) for model in ready)
    cache = current_app.extensions.setdefault("openapi_cache", {})
    if key not in cache:
        cache.clear()
        cache[key] = build_document(
            current_app, ready, current.settings.default_model, current.settings.max_batch_rows
        )
    return cache[key]


@bp.get("/docs")
@documented("Swagger UI", media_type="text/html", tag="docs")
def swagger_ui() -> Response:
    """Interactive API documentation: try any route from the browser."""
    return _page("docs/swagger.html")


@bp.get("/redoc")
@documented("ReDoc", media_type="text/html", tag="docs")
def redoc() -> Response:
    """Readable API reference."""
    return _page("docs/redoc.html")


def _page(template: str) -> Response:
    response = make_response(render_template(template))
    response.headers["Content-Security-Policy"] = _CONTENT_SECURITY_POLICY
    return response


@bp.get("/docs/assets/<bundle>/<path:filename>")
@documented(
    "Documentation UI assets",
    media_type="*/*",
    errors=(404,),
    tag="docs",
    parameters={"bundle": {"enum": sorted(_ASSETS)}, "filename": {"examples": ["swagger-ui.css"]}},
)
def assets(bundle: str, filename: str) -> Response:
    """Static files of Swagger UI (`swagger`) and ReDoc (`redoc`), from the installed bundles."""
    if bundle not in _ASSETS:
        raise NotFound()
    return send_from_directory(_ASSETS[bundle], filename, max_age=86400)
