"""The two demo models as the baselines load them: straight from the store, no checks.

The service verifies hashes, manifests and library versions before it serves a
model; the baselines skip all of that on purpose, so that what they measure is
the least a server has to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

MODELS = ("iris", "breast_cancer")


@dataclass(frozen=True)
class StoredModel:
    name: str
    version: str
    estimator: Any
    manifest: dict[str, Any]

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.manifest["features"]]


def store_root() -> Path:
    return Path(os.environ.get("SERVICE_MODEL_STORE", "model_store"))


def highest_version(root: Path, name: str) -> str:
    """The version the service serves by default. The demo store holds only "1"; numeric
    names sort as numbers and come above any other label, as in service.models.store."""
    versions = [entry.name for entry in (root / name).iterdir() if entry.is_dir()]
    if not versions:
        raise FileNotFoundError(f"{root / name} holds no version")
    return max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


def load(name: str, root: Path | None = None) -> StoredModel:
    root = store_root() if root is None else root
    version = highest_version(root, name)
    directory = root / name / version
    manifest = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    artifact = manifest.get("artifact", {}).get("file", "model.joblib")
    return StoredModel(name, version, joblib.load(directory / artifact), manifest)


def probability_keys(classes: Any) -> list[str]:
    """JSON object keys for class labels, as the service writes them: strings as they are,
    anything else (1, true) as its JSON text."""
    return [label if isinstance(label, str) else json.dumps(label) for label in classes.tolist()]
