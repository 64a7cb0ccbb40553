"""One model pass: labels taken from the probabilities equal what ``predict`` answers."""

from __future__ import annotations

import logging
import warnings
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


class DriftingForest(RandomForestClassifier):
    """A forest that warns each time it predicts, as a model fitted on other data may."""

    def predict_proba(self, X: Any) -> np.ndarray:
        warnings.warn("inputs drifted <b>far</b>", UserWarning, stacklevel=2)
        return super().predict_proba(X)


def test_a_warning_the_model_raises_is_logged_once_and_the_filters_are_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    features, target = data(3, "strings")
    model = served(DriftingForest(n_estimators=10, random_state=0), features, target)
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped the model call would raise here
        with caplog.at_level(logging.WARNING, logger="service.models.loaded"):
            first, again = model.predict(features[:3]), model.predict(features[3:5])
    with pytest.warns(UserWarning, match="drifted"):
        assert first.values.tolist() == model.estimator.predict(features[:3]).tolist()
    assert len(again.values) == 2
    said = [record.getMessage() for record in caplog.records]
    assert said == ["Model model version 1 warned while predicting: UserWarning: inputs drifted <b>far</b>"]
    assert warnings.filters == filters


def test_the_trees_of_a_forest_see_one_warnings_filter() -> None:
    """scikit-learn replays every filter around each tree it calls: the model call keeps them few."""
    seen: list[int] = []

    class Counting(DecisionTreeClassifier):
        def predict_proba(self, X: Any, check_input: bool = True) -> np.ndarray:
            seen.append(len(warnings.filters))
            return super().predict_proba(X, check_input)

    features, target = data(2, "integers")
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, target)
    forest.estimators_ = [Counting().fit(features, target) for _ in range(5)]
    model = LoadedModel(describe_estimator(forest, name="model", version="1"), forest)
    warnings.filterwarnings("ignore", message="one of many filters")
    model.predict(features[:2])
    assert seen == [1] * 5


class Quoting(RandomForestClassifier):
    """A forest whose warning quotes its input, then fails on a negative first value."""

    def predict_proba(self, X: Any) -> np.ndarray:
        warnings.warn(f"odd first value {X[0, 0]} " + "x" * 2000, RuntimeWarning, stacklevel=2)
        if X[0, 0] < 0:
            raise ValueError("cannot score a negative value")
        return super().predict_proba(X)


def test_warnings_quoting_the_input_are_logged_a_bounded_number_of_times_and_before_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    features, target = data(2, "strings")
    model = served(Quoting(n_estimators=5, random_state=0), features, target)
    with caplog.at_level(logging.WARNING, logger="service.models.loaded"):
        for value in range(100):
            model.predict(np.full((1, 6), float(value)))
        with pytest.raises(PredictionFailed):
            model.predict(np.full((1, 6), -1.0))
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 32  # the first 32 distinct ones; the failing call's comes after the cap
    assert all(len(message) < 600 for message in said)
    assert said[0].startswith(
        "Model model version 1 warned while predicting: RuntimeWarning: odd first value 0.0 x"
    )

    fresh = served(Quoting(n_estimators=5, random_state=0), features, target)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.models.loaded"), pytest.raises(PredictionFailed):
        fresh.predict(np.full((1, 6), -1.0))
    assert [record.getMessage()[:80] for record in caplog.records] == [
        "Model model version 1 warned while predicting: RuntimeWarning: odd first value -"
    ]
