"""One model pass: labels taken from the probabilities equal what ``predict`` answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from service.errors import PredictionFailed
from service.models.introspect import describe_estimator
from service.models.loaded import LoadedModel

ONE_PASS = [
    LogisticRegression(max_iter=500),
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    RandomForestClassifier(n_estimators=20, random_state=0),
    ExtraTreesClassifier(n_estimators=20, random_state=0),
    DecisionTreeClassifier(random_state=0),
    GradientBoostingClassifier(n_estimators=20, random_state=0),
    HistGradientBoostingClassifier(max_iter=20, random_state=0),
    CalibratedClassifierCV(SVC(), cv=3),
]
TWO_PASSES = [SVC(probability=True, random_state=0), KNeighborsClassifier(n_neighbors=4)]


def data(classes: int, labels: str) -> tuple[np.ndarray, np.ndarray]:
    features, target = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=classes, random_state=classes
    )
    names = np.array(["no", "yes", "maybe"]) if labels == "strings" else np.array([3, 7, 11])
    return features, names[target]


def served(estimator: Any, features: np.ndarray, target: np.ndarray) -> LoadedModel:
    estimator.fit(features, target)
    return LoadedModel(describe_estimator(estimator, name="model", version="1"), estimator)


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("labels", ["strings", "integers"])
@pytest.mark.parametrize("estimator", ONE_PASS + TWO_PASSES, ids=lambda e: type(e).__name__)
def test_labels_are_what_predict_answers(estimator: Any, classes: int, labels: str) -> None:
    features, target = data(classes, labels)
    model = served(estimator, features, target)
    assert model.one_pass == (estimator in ONE_PASS)
    # Fresh rows, and rows near the decision boundaries (between pairs of training rows).
    rng = np.random.default_rng(0)
    mixed = 0.5 * (features[rng.integers(0, 300, 400)] + features[rng.integers(0, 300, 400)])
    rows = np.vstack([rng.normal(size=(400, 6)) * 2, mixed])
    answer = model.predict(rows)
    assert answer.values.tolist() == estimator.predict(rows).tolist()
    assert np.array_equal(answer.probabilities, estimator.predict_proba(rows))


def test_a_non_finite_probability_is_a_prediction_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimator no longer scans its input for NaN (the service has); its output is checked."""
    features, target = data(3, "strings")
    model = served(LogisticRegression(max_iter=500), features, target)
    monkeypatch.setattr(model.estimator, "predict_proba", lambda rows: np.full((len(rows), 3), np.nan))
    with pytest.raises(PredictionFailed):
        model.predict(features[:2])
