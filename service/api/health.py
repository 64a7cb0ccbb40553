"""Liveness and readiness probes, and the readiness status of one model."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.api.answers import HealthSchema, ReadySchema
from service.api.openapi import documented
from service.errors import NotReady
from service.models import ServedModel
from service.state import state

bp = Blueprint("health", __name__)


@bp.get("/health")
@documented("Liveness", response=HealthSchema, tag="health")
def health() -> dict[str, Any]:
    """Liveness: the process answers. Touches no model."""
    return {"status": "ok"}


@bp.get("/ready")
@documented("Readiness", response=ReadySchema, errors=(NotReady,), tag="health")
def ready() -> dict[str, Any]:
    """Readiness: every configured model loaded and passed its warm-up prediction."""
    entries = state().registry.entries()
    not_ready = [entry for entry in entries if not entry.ready]
    models = {entry.name: model_status(entry) for entry in entries}
    if not_ready or not entries:
        names = ", ".join(f"{entry.name} ({entry.error})" for entry in not_ready) or "no models configured"
        raise NotReady(f"Not ready: {names}", models)
    return {"status": "ready", "models": models}


def model_status(entry: ServedModel) -> dict[str, Any]:
    """A served model's version and readiness, its task if loaded, why not if not."""
    status: dict[str, Any] = {"version": entry.version, "ready": entry.ready}
    if entry.model is not None:
        status["task"] = entry.model.manifest.task
    if entry.error:
        status["error"] = entry.error
    return status
