"""The OpenAPI document, and Swagger UI and ReDoc served from installed files.

The UI bundles come from the ``openapi-ui-bundles`` package and are served by
the service itself: the docs work on a network with no internet. The pages show
texts that models bring (descriptions, feature names, categories, class labels),
which are untrusted: the document escapes them (``literal_markdown``), ReDoc is
told the document is untrusted, and the pages' policy runs no inline script.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import openapi_ui_bundles
from flask import (
    Blueprint,
    current_app,
    make_response,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask.wrappers import Response
from werkzeug.exceptions import NotFound

from service.api.openapi import build_document, documented
from service.state import state

bp = Blueprint("docs", __name__)

# The pages may load only what this service serves: nothing leaves a network
# without internet, or any other. Scripts come only from files (Swagger UI's
# start-up script included), so a script that a model's text smuggled into the
# page cannot run, inline or as an event handler. Styles may be inline: both UIs
# set style attributes and inject <style> elements, and a style cannot run code.
# Images may be data: URLs (Swagger UI's icons are). ReDoc runs its search index
# in a worker made from a blob: URL; nothing needs 'unsafe-eval'.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Every docs page's headers; the last two as the pages for people send them
# (service/pages/views.py).
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_ASSETS = {
    "swagger": openapi_ui_bundles.swagger_ui.static_path,
    "redoc": openapi_ui_bundles.redoc.static_path,
    # The service's own: Swagger UI's start-up script, a file so that the policy
    # needs no 'unsafe-inline'.
    "service": str(Path(__file__).resolve().parent.parent / "static" / "docs"),
}
ASSET_MAX_AGE = 86400  # seconds

# ReDoc's side menu shows the Redocly logo, fetched from this CDN URL. The policy
# blocks that request (a refused request on every visit, and no logo), and the
# page should not try to call out at all. So the bundle is served with that one
# URL pointing at the copy of the same logo the package ships: a plain string
# swap, which survives the minifier renaming ReDoc's components and keeps its
# attribution whole. CSS could not do it: Chromium fetches a hidden <img> too.
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_LOCAL_LOGO = "logo-mini.svg"


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
    response.headers.update(_SECURITY_HEADERS)
    return response


@bp.get("/docs/assets/<bundle>/<path:filename>")
@documented(
    "Documentation UI assets",
    media_type="*/*",
    errors=(NotFound,),
    tag="docs",
    parameters={"bundle": {"enum": sorted(_ASSETS)}, "filename": {"examples": ["swagger-ui.css"]}},
)
def assets(bundle: str, filename: str) -> Response:
    """Static files of Swagger UI (`swagger`) and ReDoc (`redoc`), from the installed bundles,
    and the service's own script for them (`service`)."""
    if bundle not in _ASSETS:
        raise NotFound()
    if (bundle, filename) == ("redoc", REDOC_BUNDLE):
        return _redoc_bundle()
    return send_from_directory(_ASSETS[bundle], filename, max_age=ASSET_MAX_AGE)


def _redoc_bundle() -> Response:
    """ReDoc's bundle with its logo served from here (see REDOC_CDN_LOGO)."""
    logo = url_for("docs.assets", bundle="redoc", filename=REDOC_LOCAL_LOGO)
    response = Response(_redoc_source(logo), mimetype="text/javascript")
    response.cache_control.public = True
    response.cache_control.max_age = ASSET_MAX_AGE
    response.add_etag()
    return response.make_conditional(request)


@functools.cache
def _redoc_source(logo_url: str) -> bytes:
    # Read and rewritten once per process (per URL prefix): the bundle is 0.9 MB.
    source = (Path(_ASSETS["redoc"]) / REDOC_BUNDLE).read_text(encoding="utf-8")
    return source.replace(REDOC_CDN_LOGO, logo_url).encode("utf-8")
