"""Typical rows from what an estimator learned: what ``models add`` records without a sample."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsRegressor, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OrdinalEncoder,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

from service.models.introspect import describe_estimator
from service.models.learned_rows import learned_row

X, Y = load_iris(return_X_y=True)


def _first(model: Any) -> Any:
    return model.steps[0][1]


# (estimator, the centre it learned, read from the fitted estimator here)
CENTRES: dict[str, tuple[Callable[[], Any], Callable[[Any], np.ndarray]]] = {
    "standard-scaler": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        lambda model: _first(model).mean_,
    ),
    "min-max-scaler": (
        lambda: make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)),
        lambda model: (_first(model).data_min_ + _first(model).data_max_) / 2,
    ),
    "robust-scaler": (
        lambda: make_pipeline(RobustScaler(), LogisticRegression(max_iter=500)),
        lambda model: _first(model).center_,
    ),
    "median-imputer": (
        lambda: make_pipeline(SimpleImputer(strategy="median"), LogisticRegression(max_iter=500)),
        lambda model: _first(model).statistics_,
    ),
    "pca": (
        lambda: make_pipeline(PCA(n_components=2), LogisticRegression(max_iter=500)),
        lambda model: _first(model).mean_,
    ),
    "gaussian-nb": (GaussianNB, lambda model: model.class_prior_ @ model.theta_),
    "lda": (LinearDiscriminantAnalysis, lambda model: model.priors_ @ model.means_),
    "nearest-centroid": (NearestCentroid, lambda model: model.centroids_.mean(axis=0)),
}


@pytest.mark.parametrize("kind", CENTRES)
def test_the_typical_row_is_the_centre_the_estimator_learned(kind: str) -> None:
    build, centre = CENTRES[kind]
    model = build().fit(X, Y)
    manifest = describe_estimator(model, name="m", version="1")
    typical = [feature.typical for feature in manifest.features]
    assert typical == pytest.approx(centre(model), rel=1e-5)
    assert manifest.typical_row is not None and manifest.typical_row.kind == "estimator"
    assert manifest.typical_row_known


def test_quantiles_give_the_medians() -> None:
    """The row the quantile transformer maps to the middle of every column (of continuous data: iris's
    many ties would make the middle a step)."""
    rows = np.random.default_rng(5).normal(size=(200, 3))
    labels = rows.sum(axis=1) > 0
    model = make_pipeline(QuantileTransformer(n_quantiles=50), LogisticRegression()).fit(rows, labels)
    typical = [feature.typical for feature in describe_estimator(model, name="m", version="1").features]
    assert _first(model).transform([typical])[0] == pytest.approx(np.full(3, 0.5), abs=1e-4)


def test_a_neighbours_model_gives_the_training_row_nearest_the_mean() -> None:
    model = KNeighborsRegressor().fit(X, Y)
    manifest = describe_estimator(model, name="m", version="1")
    typical = np.array([feature.typical for feature in manifest.features])
    distances = ((X - X.mean(axis=0)) ** 2).sum(axis=1)
    assert typical.tolist() == X[np.argmin(distances)].tolist()


def test_cluster_centres_weighted_by_size_are_the_mean() -> None:
    model = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    found = learned_row(model)
    assert found is not None and "KMeans" in found.source
    assert list(found.values) == pytest.approx(X.mean(axis=0), rel=1e-5)


def test_a_column_transformer_asks_each_transformer_about_its_columns() -> None:
    """Numbers from the scaler, a category from the imputer before the encoder; a dropped column
    takes a placeholder, since the model never reads it."""
    frame = pd.DataFrame(
        {
            "size": [1.0, 2.0, 3.0, 6.0],
            "colour": ["red", "blue", "red", "green"],
            "ignored": [9.0, 9.0, 9.0, 9.0],
        }
    )
    prepare = ColumnTransformer(
        [
            ("num", StandardScaler(), ["size"]),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["colour"]),
        ],
        remainder="drop",
    )
    model = make_pipeline(prepare, LogisticRegression()).fit(frame, [0, 1, 0, 1])
    manifest = describe_estimator(model, name="m", version="1")
    typical = {feature.name: feature.typical for feature in manifest.features}
    assert typical["size"] == pytest.approx(frame["size"].mean())
    assert typical["colour"] == "red"
    assert typical["ignored"] is not None
    assert manifest.typical_row is not None
    assert "StandardScaler" in manifest.typical_row.source and "SimpleImputer" in manifest.typical_row.source


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_pipeline(FunctionTransformer(), LogisticRegression(max_iter=500)),
        lambda: make_pipeline(
            SimpleImputer(strategy="constant", fill_value=0.0), LogisticRegression(max_iter=500)
        ),
        lambda: make_pipeline(
            ColumnTransformer([("num", StandardScaler(), [0, 1])], remainder="passthrough"),
            LogisticRegression(max_iter=500),
        ),
        lambda: LogisticRegression(max_iter=500),
    ],
    ids=["function-transformer", "constant-imputer", "passthrough-columns", "no-statistics"],
)
def test_no_typical_row_where_the_estimator_learned_no_centre(build: Callable[[], Any]) -> None:
    """A step that learns nothing of some column leaves the row unknown, not half made up."""
    manifest = describe_estimator(build().fit(X, Y), name="m", version="1")
    assert all(feature.typical is None for feature in manifest.features)
    assert manifest.typical_row is None and not manifest.typical_row_known


def test_statistics_that_cannot_be_read_leave_the_row_unknown() -> None:
    """A scaler whose means are not numbers (as an odd subclass may have): no typical row, no error."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)
    _first(model).mean_ = ["not", "numbers", "at", "all"]
    manifest = describe_estimator(model, name="m", version="1")
    assert manifest.typical_row is None and not manifest.typical_row_known
