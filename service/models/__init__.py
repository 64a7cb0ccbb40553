"""The model layer: store, manifest, loaded model, prediction. It imports no Flask."""

from service.models.loaded import LoadedModel, Prediction
from service.models.manifest import Feature, Manifest
from service.models.registry import ModelRegistry, ServedModel, load_registry
from service.models.store import ModelStore

__all__ = [
    "Feature",
    "LoadedModel",
    "Manifest",
    "ModelRegistry",
    "ModelStore",
    "Prediction",
    "ServedModel",
    "load_registry",
]
