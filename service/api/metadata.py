"""Model metadata: the served models, and each one's manifest and how it is served."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.api.answers import ModelListSchema, metadata_schema
from service.api.auth import current_client
from service.api.health import model_status
from service.api.openapi import documented
from service.errors import ModelNotFound
from service.models import LoadedModel, ServedModel
from service.models.manifest import manifest_to_dict
from service.models.versions import runtime_versions
from service.state import state

# Named for its routes and its OpenAPI tag: endpoints (and so operationIds) read
# models.list_models, models.model_metadata.
bp = Blueprint("models", __name__)


@bp.get("/metadata")
@documented("The default model's metadata", response=metadata_schema(), errors=(ModelNotFound,))
def metadata() -> dict[str, Any]:
    """The manifest of the model behind `/predict`, and how it is served."""
    return describe(state().registry.entry(state().settings.default_model))


@bp.get("/v1/models")
@documented("List the served models", response=ModelListSchema)
def list_models() -> dict[str, Any]:
    """Every configured model with its served and stored versions and readiness (with API keys on,
    the models the client's key covers)."""
    current = state()
    client = current_client()
    return {
        "default_model": current.settings.default_model,
        "models": [
            {**model_status(entry), "name": entry.name, "versions": current.store.versions(entry.name)}
            for entry in current.registry.entries()
            if client is None or client.may_use(entry.name)
        ],
    }


@bp.get("/v1/models/<name>")
@documented(
    "A model's metadata",
    response=metadata_schema(),
    errors=(ModelNotFound,),
    parameters={"name": {"examples": ["iris"]}},
)
def model_metadata(name: str) -> dict[str, Any]:
    """The model's manifest (features with types and ranges, classes, metrics, training date,
    library versions) and how it is served; a model that is not ready shows why."""
    return describe(state().registry.entry(name))


def compiled_failure(model: LoadedModel) -> list[str]:
    """Why this process serves a compiled model with scikit-learn after all (its session failed)."""
    failed = model.compiled.failed if model.compiled is not None else None
    return [failed] if failed else []


def describe(entry: ServedModel) -> dict[str, Any]:
    """A served model's manifest, plus how it is being served."""
    served: dict[str, Any] = {"name": entry.name, **model_status(entry)}
    if entry.model is None:
        return served
    manifest = manifest_to_dict(entry.model.manifest)
    served.update(manifest)
    if entry.model.manifest.metrics_label:
        served["metrics_label"] = entry.model.manifest.metrics_label
    served.update(
        {
            "loaded_at": entry.model.loaded_at,
            "runtime": entry.model.runtime,
            "warnings": [*entry.model.warnings, *compiled_failure(entry.model)],
            "serving_with": runtime_versions(),
            "stored_versions": state().store.versions(entry.name),
        }
    )
    return served
