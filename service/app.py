"""The app factory: ``create_app`` names every resource, extension and blueprint the app has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.wrappers import Response

from service import cli, pages
from service.access_log import AccessLog
from service.api import (
    auth,
    csv_predict,
    docs,
    headers,
    health,
    json_provider,
    limits,
    metadata,
    metrics,
    predict,
    problems,
    request_ids,
    wsgi_input,
)
from service.audit import PredictionAuditLog
from service.config import Settings
from service.keyring import KeyRing
from service.models import ModelStore, load_registry
from service.models.batching import Batching
from service.models.core import PredictionCore
from service.models.onnx_runtime import start_sessions
from service.state import EXTENSION_KEY, ServiceState
from service.v2 import rest as v2_rest

__all__ = ["ServiceFlask", "create_app", "start_worker", "stop_worker", "unservable_reason"]


class ServiceFlask(Flask):
    """Flask, answering OPTIONS with 204 and no body rather than an empty text/html 200."""

    def make_default_options_response(self) -> Response:
        response = super().make_default_options_response()
        response.status_code = 204
        response.headers["Allow"] = ", ".join(sorted(response.allow))
        del response.headers["Content-Type"]
        return response


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, model store, loaded models, extensions, blueprints.

    ``config`` is a ``Settings``, or a mapping of ``Settings`` fields that
    override the environment (handy in tests), or None for the environment alone.
    """
    settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))

    # Named for the package, not this module: the app's logger is "service" and
    # its root path (where templates/ lives) is the package's directory.
    app = ServiceFlask("service", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Werkzeug would answer '//predict' with an HTML redirect; a client that
    # sends a wrong path gets a JSON 404 instead.
    app.url_map.merge_slashes = False
    # A body the server cannot read to its end (broken chunked framing, shorter
    # than its Content-Length) is the client's fault: a 400 on every route.
    app.wsgi_app = wsgi_input.CheckedBodies(app.wsgi_app)
    if settings.access_log:
        app.wsgi_app = AccessLog(app.wsgi_app)
    json_provider.init_app(app)  # orjson; keys keep type/title/status/detail and manifest order

    store = ModelStore(settings.model_store, allow_pickle=settings.allow_pickle)
    registry = load_registry(
        store,
        settings.models,
        settings.model_versions,
        strict_versions=settings.strict_versions,
        range_policy=settings.range_policy,
        runtime=settings.runtime,
        model_threads=settings.model_threads,
    )
    request_ids.init_app(app)
    recorded = metrics.init_app(app, registry.entries())
    audit = None
    if settings.prediction_log:
        audit = PredictionAuditLog(settings.prediction_log, on_dropped=recorded.audit_lines_dropped.inc)
    # Every front end predicts through the one core; what it does is counted and audited.
    batching = (
        Batching(max_rows=settings.batch_max_rows, max_wait=settings.batch_max_wait_ms / 1000)
        if settings.batching
        else None
    )
    core = PredictionCore(observers=[recorded] if audit is None else [recorded, audit], batching=batching)
    app.extensions[EXTENSION_KEY] = ServiceState(
        settings=settings, store=store, registry=registry, core=core, audit=audit
    )

    problems.init_app(app)
    if settings.api_keys_file is not None:
        auth.init_app(
            app,
            KeyRing(settings.api_keys_file),
            default_model=settings.default_model,
            protect_metrics=settings.protect_metrics,
            protect_docs=settings.protect_docs,
        )
    app.register_blueprint(metrics.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metadata.bp)
    app.register_blueprint(predict.bp)
    app.register_blueprint(csv_predict.bp)
    app.register_blueprint(docs.bp)
    v2_rest.init_app(app)
    if settings.demo:
        app.register_blueprint(pages.bp)
    headers.init_app(app, settings.cors_origins)
    # After the key check: limits are counted for the client it found.
    limits.init_app(app, settings, on_storage_error=recorded.rate_limit_storage_errors.inc)
    cli.init_app(app)
    return app


def start_worker(app: Flask) -> None:
    """In a server's worker, just forked: start what the master held back (compiled models'
    sessions, the gRPC server when ``SERVICE_GRPC_PORT`` is set)."""
    current: ServiceState = app.extensions[EXTENSION_KEY]
    entries = current.registry.entries()
    start_sessions([entry.model for entry in entries if entry.model is not None])
    recorded = app.extensions[metrics.EXTENSION_KEY]
    recorded.show_runtimes(entries)
    if current.settings.grpc_port is not None:
        # Imported here: grpcio's threads must never start in the master (see the module).
        from service.v2.grpc_server import start_grpc

        guard = auth.guard_of(app)
        app.extensions[GRPC_KEY] = start_grpc(current, recorded, guard.ring if guard is not None else None)


def stop_worker(app: Flask, grace: float) -> None:
    """In a worker that is stopping: its gRPC server refuses new calls and finishes those in flight."""
    server = app.extensions.pop(GRPC_KEY, None)
    if server is not None:
        from service.v2.grpc_server import stop_grpc

        stop_grpc(server, grace)


GRPC_KEY = "service.grpc"


def unservable_reason(app: Flask) -> str | None:
    """Why this app cannot serve anything at all, or None if one model is ready.

    The server refuses to start on this (see ``gunicorn.conf.py``); the app
    itself still builds, so that ``flask --app wsgi models add`` (or ``models
    demo``) can fill an empty store.
    """
    current: ServiceState = app.extensions[EXTENSION_KEY]
    entries = current.registry.entries()
    if any(entry.ready for entry in entries):
        return None
    if not entries:
        return (
            f"the model store {current.settings.model_store} holds no models; "
            "run 'make train' for the demo models or 'flask --app wsgi models add' for your own"
        )
    reasons = "; ".join(entry.error or f"{entry.name} failed" for entry in entries)
    return f"no model could be loaded from {current.settings.model_store}: {reasons}"
