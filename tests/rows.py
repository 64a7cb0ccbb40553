"""A model's JSON row rules as the v1 routes apply them, without HTTP: one row or several,
to the model's input matrix or ``InvalidInput``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.models.core import validated
from service.models.json_rows import JsonRows
from service.models.manifest import Artifact, Feature, Manifest
from service.models.rules import RuleSet


class JsonValidator:
    def __init__(self, manifest: Manifest, policy: str = "flag") -> None:
        self.manifest = manifest
        self.rules = RuleSet(manifest, policy)

    def validate_one(self, row: Any) -> np.ndarray:
        """One row, as ``{"features": row}`` sends it: errors keyed by field."""
        return validated(self.rules, JsonRows([row], many=False))

    def validate_many(self, rows: Sequence[Any]) -> np.ndarray:
        """Several rows, as ``{"instances": rows}`` sends them: errors keyed by row index."""
        return validated(self.rules, JsonRows(rows, many=True))


def manifest_of(name: str, *features: Feature, task: str = "regression") -> Manifest:
    """A manifest of ``features`` alone, for the rules (its artifact is never loaded)."""
    return Manifest(
        name=name,
        version="1",
        task=task,
        artifact=Artifact("model.joblib", "0" * 64),
        trained_with={"sklearn": "1.0"},
        features=features,
    )


def with_features(manifest: Manifest, *features: Feature) -> Manifest:
    """``manifest`` with other features."""
    return Manifest(**{**vars(manifest), "features": features})
