"""Liveness, readiness and model metadata."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.api import state
from service.api.openapi import documented
from service.api.schemas import HealthSchema, ModelListSchema, ReadySchema, metadata_schema
from service.errors import NotReady
from service.models import ServedModel
from service.models.manifest import manifest_to_dict
from service.models.versions import runtime_versions

bp = Blueprint("health", __name__)


@bp.get("/health")
@documented("Liveness", response=HealthSchema, tag="health")
def health() -> dict[str, Any]:
    """Liveness: the process answers. Touches no model."""
    return {"status": "ok"}


@bp.get("/ready")
@documented("Readiness", response=ReadySchema, errors=(503,), tag="health")
def ready() -> dict[str, Any]:
    """Readiness: every configured model loaded and passed its warm-up prediction."""
    entries = state().registry.entries()
    not_ready = [entry for entry in entries if not entry.ready]
    models = {entry.name: _status(entry) for entry in entries}
    if not_ready or not entries:
        names = ", ".join(f"{entry.name} ({entry.error})" for entry in not_ready) or "no models configured"
        raise NotReady(f"Not ready: {names}", models)
    return {"status": "ready", "models": models}


@bp.get("/metadata")
@documented("The default model's metadata", response=metadata_schema(), errors=(404,))
def metadata() -> dict[str, Any]:
    """The manifest of the model behind `/predict`, and how it is served."""
    return describe(state().registry.entry(state().settings.default_model))


@bp.get("/v1/models")
@documented("List the served models", response=ModelListSchema)
def list_models() -> dict[str, Any]:
    """Every configured model with its served and stored versions and readiness."""
    current = state()
    return {
        "default_model": current.settings.default_model,
        "models": [
            {**_status(entry), "name": entry.name, "versions": current.store.versions(entry.name)}
            for entry in current.registry.entries()
        ],
    }


@bp.get("/v1/models/<name>")
@documented(
    "A model's metadata",
    response=metadata_schema(),
    errors=(404,),
    parameters={"name": {"examples": ["iris"]}},
)
def model_metadata(name: str) -> dict[str, Any]:
    """The model's manifest (features with types and ranges, classes, metrics, training date,
    library versions) and how it is served; a model that is not ready shows why."""
    return describe(state().registry.entry(name))


def describe(entry: ServedModel) -> dict[str, Any]:
    """A served model's manifest, plus how it is being served."""
    served: dict[str, Any] = {"name": entry.name, **_status(entry)}
    if entry.model is None:
        return served
    manifest = manifest_to_dict(entry.model.manifest)
    served.update(manifest)
    served.update(
        {
            "loaded_at": entry.model.loaded_at,
            "warnings": list(entry.model.warnings),
            "serving_with": runtime_versions(),
            "stored_versions": state().store.versions(entry.name),
        }
    )
    return served


def _status(entry: ServedModel) -> dict[str, Any]:
    status: dict[str, Any] = {"version": entry.version, "ready": entry.ready}
    if entry.model is not None:
        status["task"] = entry.model.manifest.task
    if entry.error:
        status["error"] = entry.error
    return status
