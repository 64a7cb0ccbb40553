"""A typical input row from what a fitted estimator learned about its inputs.

Without a sample of data, the rows worth trusting are those the estimator can
vouch for itself: a scaler's means, an imputer's fill values, the centres of
clusters or classes, the training rows a neighbours model keeps. Only the first
step of a pipeline sees the input columns (what a later step learned is in the
units of the step before it), so only the first step is asked; a column
transformer asks each of its transformers about its own columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.impute import SimpleImputer
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    LocalOutlierFactor,
    NearestCentroid,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)

from service.models.estimator_inputs import is_missing
from service.models.shapes import first_step, plain

# The nearest-to-the-mean training row is searched this many rows at a time, so
# the search needs a bounded amount of memory beside the rows the model keeps.
_SEARCH_CHUNK_ROWS = 10_000

# A column the model drops: any value does, since the model never reads it.
IGNORED = object()


@dataclass(frozen=True)
class LearnedRow:
    """One value per input column (``IGNORED`` for a dropped column), and what they are."""

    values: tuple[Any, ...]
    source: str


def learned_row(estimator: Any) -> LearnedRow | None:
    """The row ``estimator``'s first step knows as the centre of its inputs, if it knows one."""
    try:
        found = _centre(estimator)
    except Exception:  # a subclass from a pickle whose attributes are not what scikit-learn's are
        return None
    if found is None:
        return None
    values, sources = found
    return LearnedRow(tuple(values), "; ".join(dict.fromkeys(sources)))


_Found = tuple[list[Any], list[str]]


def _centre(step: Any) -> _Found | None:
    if isinstance(step, Pipeline):
        first = first_step(step)
        return None if first is None else _centre(first)
    if isinstance(step, ColumnTransformer):
        return _columns_centre(step)
    for kinds, read in _READERS:
        if isinstance(step, kinds):
            found = read(step)
            if found is None:
                return None
            values, what = found
            return list(values), [what.format(model=type(step).__name__)]
    return None


def _columns_centre(transformer: ColumnTransformer) -> _Found | None:
    """Each column's value from the transformer that reads it; None if one column has none."""
    indices = getattr(transformer, "_transformer_to_input_indices", None)
    width = getattr(transformer, "n_features_in_", None)
    if indices is None or width is None:
        return None
    values: list[Any] = [None] * width
    sources: list[str] = []
    covered = 0
    for name, part, _ in transformer.transformers_:
        columns = indices.get(name, [])
        if not columns:
            continue
        if isinstance(part, str):
            if part != "drop":  # "passthrough": nothing learned about these columns
                return None
            found: _Found | None = ([IGNORED] * len(columns), [])
        else:
            found = _centre(part)
        if found is None or len(found[0]) != len(columns):
            return None
        for column, value in zip(columns, found[0], strict=True):
            values[column] = value
        sources.extend(found[1])
        covered += len(columns)
    return (values, sources) if covered == width else None


def _rounded(values: Any) -> list[float]:
    """Averages to six significant digits: what a person reads, close enough to the centre."""
    return [float(f"{float(value):.6g}") for value in np.asarray(values, dtype=np.float64)]


def _weighted(centres: Any, weights: Any) -> list[float]:
    centres = np.asarray(centres, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    return _rounded(weights @ centres / weights.sum())


def _standard(step: StandardScaler) -> tuple[list[Any], str] | None:
    return None if step.mean_ is None else (_rounded(step.mean_), "the means {model} learned")


def _robust(step: RobustScaler) -> tuple[list[Any], str] | None:
    return None if step.center_ is None else (_rounded(step.center_), "the medians {model} learned")


def _min_max(step: MinMaxScaler) -> tuple[list[Any], str]:
    return _rounded((step.data_min_ + step.data_max_) / 2), "the middles of the ranges {model} learned"


def _imputer(step: SimpleImputer) -> tuple[list[Any], str] | None:
    if step.strategy == "constant":  # the fill value is the user's choice, not the data's
        return None
    words = {"mean": "the means", "median": "the medians", "most_frequent": "the most frequent values"}
    values = list(step.statistics_)
    if step.statistics_.dtype.kind in "fiu":
        values = _rounded(step.statistics_) if step.strategy == "mean" else [float(v) for v in values]
    what = words.get(step.strategy, "the values") if isinstance(step.strategy, str) else "the values"
    return values, f"{what} {{model}} fills in"


def _quantiles(step: QuantileTransformer) -> tuple[list[Any], str]:
    medians = [np.interp(0.5, step.references_, column) for column in step.quantiles_.T]
    return _rounded(medians), "the medians {model} learned"


def _pca(step: PCA | IncrementalPCA) -> tuple[list[Any], str]:
    return _rounded(step.mean_), "the means {model} learned"


def _encoder(step: OneHotEncoder | OrdinalEncoder) -> tuple[list[Any], str] | None:
    values = []
    for categories in step.categories_:
        seen = [c for c in categories if not is_missing(c)]
        if not seen:
            return None
        values.append(plain(seen[0]))
    return values, "the first category of each column {model} learned"


def _clusters(step: Any) -> tuple[list[Any], str]:
    sizes = np.bincount(step.labels_, minlength=len(step.cluster_centers_))
    return _weighted(step.cluster_centers_, sizes), "the centre of the clusters {model} learned"


def _naive_bayes(step: GaussianNB) -> tuple[list[Any], str]:
    what = "the class means {model} learned, weighted by class frequency"
    return _weighted(step.theta_, step.class_prior_), what


def _discriminant(step: LinearDiscriminantAnalysis | QuadraticDiscriminantAnalysis) -> tuple[list[Any], str]:
    return _weighted(step.means_, step.priors_), "the class means {model} learned, weighted by class priors"


def _centroids(step: NearestCentroid) -> tuple[list[Any], str]:
    return _rounded(np.mean(step.centroids_, axis=0)), "the mean of the class centroids {model} learned"


def _neighbours(step: Any) -> tuple[list[Any], str] | None:
    rows = getattr(step, "_fit_X", None)
    if step.metric == "precomputed" or not isinstance(rows, np.ndarray) or rows.ndim != 2 or not len(rows):
        return None  # distances instead of rows, or sparse rows
    mean = rows.mean(axis=0, dtype=np.float64)
    best, best_distance = 0, math.inf
    for start in range(0, len(rows), _SEARCH_CHUNK_ROWS):
        distances = ((rows[start : start + _SEARCH_CHUNK_ROWS] - mean) ** 2).sum(axis=1)
        index = int(np.argmin(distances))
        if distances[index] < best_distance:
            best, best_distance = start + index, float(distances[index])
    # A row the model was fitted on, exactly: a radius-neighbours model always finds it.
    return [float(value) for value in rows[best]], "the training row nearest the mean of those {model} keeps"


_NEIGHBOURS = (
    KNeighborsClassifier,
    KNeighborsRegressor,
    LocalOutlierFactor,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
)

_READERS: tuple[tuple[type | tuple[type, ...], Callable[[Any], tuple[list[Any], str] | None]], ...] = (
    (StandardScaler, _standard),
    (RobustScaler, _robust),
    (MinMaxScaler, _min_max),
    (SimpleImputer, _imputer),
    (QuantileTransformer, _quantiles),
    ((PCA, IncrementalPCA), _pca),
    ((OneHotEncoder, OrdinalEncoder), _encoder),
    ((KMeans, MiniBatchKMeans, BisectingKMeans), _clusters),
    (GaussianNB, _naive_bayes),
    ((LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis), _discriminant),
    (NearestCentroid, _centroids),
    (_NEIGHBOURS, _neighbours),
)
