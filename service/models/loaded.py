"""A model in memory, checked and ready: the one place where prediction happens."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from service.errors import PredictionFailed
from service.models.inputs import RowValidator
from service.models.manifest import Manifest

log = logging.getLogger(__name__)

# One estimator call at a time per process. scikit-learn (1.9) edits the
# process-wide warnings filters while it predicts; two threads doing so at once
# corrupt them (floods of warnings, filters left empty). Prediction holds the
# GIL for most of its time anyway: parallelism comes from worker processes.
_ESTIMATOR_LOCK = threading.Lock()

_FRAME_DTYPES = {"float": "float64", "int": "int64", "bool": "bool", "category": "object"}


@dataclass(frozen=True)
class Prediction:
    """The model's answer for n rows, in row order.

    ``values`` holds class labels (classifiers) or numbers (regressors);
    ``probabilities`` is n x len(classes), columns in ``classes`` order, when the
    classifier has ``predict_proba``.
    """

    values: np.ndarray
    probabilities: np.ndarray | None = None
    classes: tuple[Any, ...] | None = None


def probability_keys(classes: tuple[Any, ...]) -> list[str]:
    """JSON object keys for class labels: strings as they are, 1 and true as "1" and "true"."""
    return [label if isinstance(label, str) else json.dumps(label) for label in classes]


@dataclass
class LoadedModel:
    manifest: Manifest
    estimator: Any
    warnings: tuple[str, ...] = ()
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))

    def __post_init__(self) -> None:
        self.validator = RowValidator(self.manifest)
        # An estimator fitted on a DataFrame checks column names at predict time
        # (a ColumnTransformer selects columns by name), so it gets a DataFrame.
        self._wants_frame = hasattr(self.estimator, "feature_names_in_")
        self._has_probabilities = self.manifest.task == "classification" and hasattr(
            self.estimator, "predict_proba"
        )

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def has_probabilities(self) -> bool:
        return self._has_probabilities

    def predict(self, matrix: np.ndarray | pd.DataFrame) -> Prediction:
        """Predict on a validated matrix whose columns follow the manifest's order.

        All rows go to the estimator in one vectorised call.
        """
        model_input = self._model_input(matrix)
        try:
            with _ESTIMATOR_LOCK:
                values = np.asarray(self.estimator.predict(model_input))
                probabilities = (
                    np.asarray(self.estimator.predict_proba(model_input), dtype=np.float64)
                    if self._has_probabilities
                    else None
                )
        except Exception as error:
            raise PredictionFailed(self.name, self.version) from error
        if self.manifest.task == "regression":
            values = values.astype(np.float64, copy=False).reshape(len(values))
            if not np.isfinite(values).all():
                raise PredictionFailed(self.name, self.version) from ValueError(
                    "the regressor returned a non-finite value"
                )
        return Prediction(values=values, probabilities=probabilities, classes=self.manifest.classes)

    def warm_up(self) -> Prediction:
        """Predict the manifest's example row through the same path as a request."""
        return self.predict(self.validator.validate_one(self.manifest.example_row()))

    def _model_input(self, matrix: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
        names = list(self.manifest.feature_names)
        if isinstance(matrix, pd.DataFrame):
            matrix = matrix[names]
            return matrix if self._wants_frame else matrix.to_numpy()
        if not self._wants_frame:
            return matrix
        return pd.DataFrame(
            {
                feature.name: matrix[:, column].astype(_FRAME_DTYPES[feature.type])
                for column, feature in enumerate(self.manifest.features)
            },
            columns=names,
        )
