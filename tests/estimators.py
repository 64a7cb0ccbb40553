"""Estimators with deliberate faults, importable so that they can be pickled."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


class ExplodingRegressor(RegressorMixin, BaseEstimator):
    """Predicts 0, but raises with a private-looking message when the first feature exceeds 5."""

    def fit(self, X: Any, y: Any) -> ExplodingRegressor:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if (X[:, 0] > 5).any():
            raise RuntimeError("secret detail: /srv/private/path and password=hunter2")
        return np.zeros(len(X))


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that looks fine to introspection but cannot predict."""

    def fit(self, X: Any, y: Any) -> FailingClassifier:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> Any:
        raise RuntimeError("this model always fails")


class ArtifactTrap:
    """Touches a file when unpickled: shows whether an artifact was ever loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


class PickyRegressor(RegressorMixin, BaseEstimator):
    """Predicts each row's sum; takes ``delay`` seconds per call (as a big forest does, so that
    concurrent requests queue for it) and fails the whole call when any row's first feature is 13."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def fit(self, X: Any, y: Any) -> PickyRegressor:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        time.sleep(self.delay)
        if (X[:, 0] == 13).any():
            raise RuntimeError("the model cannot take 13")
        return X.sum(axis=1)
