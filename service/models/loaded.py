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
from sklearn import config_context
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from service.errors import PredictionFailed
from service.models.manifest import Feature, Manifest
from service.models.rules import RuleSet

log = logging.getLogger(__name__)

# One estimator call at a time per process. scikit-learn (1.9) edits the
# process-wide warnings filters while it predicts; two threads doing so at once
# corrupt them (floods of warnings, filters left empty). Prediction holds the
# GIL for most of its time anyway: parallelism comes from worker processes.
_ESTIMATOR_LOCK = threading.Lock()

# Classifiers whose ``predict`` is the most probable class of ``predict_proba``:
# trees, forests and calibrated classifiers compute it that way; the others
# predict the argmax of a decision function that their probabilities transform
# monotonically (logistic or softmax). For these one ``predict_proba`` pass gives
# both answers. Any other classifier (an SVC's Platt-scaled probabilities can
# disagree with its ``predict``) is asked twice.
_LABEL_IS_ARGMAX = (
    CalibratedClassifierCV,
    DecisionTreeClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    LogisticRegression,
    RandomForestClassifier,
)

_FRAME_DTYPES = {"float": "float64", "int": "int64", "bool": "bool", "category": "object"}
_NULLABLE_FRAME_DTYPES = {**_FRAME_DTYPES, "int": "float64", "bool": "object"}


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
    range_policy: str = "flag"

    def __post_init__(self) -> None:
        # Compiled once: every front end judges rows by these rules.
        self.rules = RuleSet(self.manifest, self.range_policy)
        # Missing values reach the model as NaN: let scikit-learn see them.
        self._assume_finite = not self.rules.nullable
        # An estimator fitted on a DataFrame checks column names at predict time
        # (a ColumnTransformer selects columns by name), so it gets a DataFrame.
        self._wants_frame = hasattr(self.estimator, "feature_names_in_")
        self._has_probabilities = self.manifest.task == "classification" and hasattr(
            self.estimator, "predict_proba"
        )
        self._classes = np.asarray(getattr(self.estimator, "classes_", ()))
        self._one_pass = (
            self._has_probabilities
            and self._classes.ndim == 1  # one output; a multi-output model answers with a list
            and isinstance(_final_step(self.estimator), _LABEL_IS_ARGMAX)
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
        try:
            # Building the input is part of the model's side: a value the rules
            # pass that the model cannot take is its fault, not the client's.
            model_input = self._model_input(matrix)
            # Every value was checked finite before it got here, so scikit-learn
            # need not scan the matrix again (a tenth of a small request's time);
            # what the model makes of it is checked below.
            with _ESTIMATOR_LOCK, config_context(assume_finite=self._assume_finite):
                probabilities = (
                    np.asarray(self.estimator.predict_proba(model_input), dtype=np.float64)
                    if self._has_probabilities
                    else None
                )
                if self._one_pass:
                    values = self._classes.take(probabilities.argmax(axis=1))
                else:
                    values = np.asarray(self.estimator.predict(model_input))
        except Exception as error:
            raise PredictionFailed(self.name, self.version) from error
        if probabilities is not None and not np.isfinite(probabilities).all():
            raise PredictionFailed(self.name, self.version) from ValueError(
                "the classifier returned a non-finite probability"
            )
        if self.manifest.task == "regression":
            values = values.astype(np.float64, copy=False).reshape(len(values))
            if not np.isfinite(values).all():
                raise PredictionFailed(self.name, self.version) from ValueError(
                    "the regressor returned a non-finite value"
                )
        return Prediction(values=values, probabilities=probabilities, classes=self.manifest.classes)

    @property
    def one_pass(self) -> bool:
        """True when labels come from the probabilities, with no second pass over the model."""
        return self._one_pass

    def _model_input(self, matrix: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
        names = list(self.manifest.feature_names)
        if isinstance(matrix, pd.DataFrame):
            matrix = matrix[names]
            return matrix if self._wants_frame else matrix.to_numpy()
        if not self._wants_frame:
            return matrix
        return pd.DataFrame(
            {
                feature.name: _frame_column(matrix[:, column], feature)
                for column, feature in enumerate(self.manifest.features)
            },
            columns=names,
        )


def _frame_column(values: np.ndarray, feature: Feature) -> np.ndarray:
    # A column that may hold a missing value (NaN) cannot be int64 or bool.
    dtypes = _NULLABLE_FRAME_DTYPES if feature.nullable else _FRAME_DTYPES
    try:
        return values.astype(dtypes[feature.type])
    except OverflowError:
        # An integer beyond int64 is valid (the model computes in floats): it goes as a float.
        return values.astype(np.float64)


def _final_step(estimator: Any) -> Any:
    while isinstance(estimator, Pipeline):
        estimator = estimator[-1]
    return estimator
