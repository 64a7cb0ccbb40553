"""How model versions are ordered, and the library versions a model was trained and is served with."""

from __future__ import annotations

import platform
import re
from typing import Any

import joblib
import numpy
import sklearn
from packaging.version import InvalidVersion, Version


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions: PEP 440 ones (1, 2, 10, 1.2.0) numerically, above any other label."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        parts = re.findall(r"\d+|\D+", version)
        return (0, tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts))


def runtime_versions() -> dict[str, str]:
    """Library versions of this process, recorded in manifests at training time."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }


def version_mismatches(trained_with: dict[str, str]) -> list[str]:
    """Human-readable differences between the training and serving runtimes."""
    here = runtime_versions()
    problems = []
    trained_sklearn = trained_with.get("sklearn")
    if trained_sklearn != here["sklearn"]:
        problems.append(f"trained with scikit-learn {trained_sklearn}, serving with {here['sklearn']}")
    trained_python = trained_with.get("python")
    if trained_python and trained_python.split(".")[:2] != here["python"].split(".")[:2]:
        problems.append(f"trained with Python {trained_python}, serving with {here['python']}")
    return problems
