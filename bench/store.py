"""The two demo models as the baselines load them: straight from the store, no checks.

The benchmark serves a copy of them (``copy_models``), compiled to ONNX in place
(``compile_onnx``), so that a run never changes the store it was given.

The service verifies hashes, manifests and library versions before it serves a
model; the baselines skip all of that on purpose, so that what they measure is
the least a server has to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib

from local_gunicorn import REPO_ROOT

MODELS = ("iris", "breast_cancer")
COMPILE_TIMEOUT = 600  # conversion and parity check of a 200-tree forest, on a busy machine


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


def copy_models(source: Path, target: Path) -> Path:
    """Copy MODELS' directories (every version) from ``source`` into a new store ``target``."""
    for name in MODELS:
        shutil.copytree(source / name, target / name, symlinks=False)
    return target


def compile_onnx(store: Path) -> dict[str, str]:
    """``flask --app wsgi models compile NAME`` for each model in ``store``: what failed, and why
    (the last line the command wrote), by model name; an empty dict when every model compiled."""
    failed = {}
    for name in MODELS:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "wsgi", "models", "compile", name],
                cwd=REPO_ROOT,
                env={**os.environ, "SERVICE_MODEL_STORE": str(store)},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            failed[name] = f"not compiled within {COMPILE_TIMEOUT} s"
            continue
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            failed[name] = f"exit {done.returncode}: {lines[-1][:300]}"
    return failed
