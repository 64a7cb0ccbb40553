"""A model in memory, checked and ready: the one place where prediction happens."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator
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
    IsolationForest,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import LocalOutlierFactor
from sklearn.tree import DecisionTreeClassifier

from service.errors import PredictionFailed
from service.models.manifest import Feature, Manifest
from service.models.onnx_runtime import OnnxRuntime
from service.models.rules import RuleSet
from service.models.shapes import final_step

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

# Outlier detectors whose ``predict`` is -1 exactly where ``decision_function`` is
# negative (their own code computes it so): one pass gives label and score.
_LABEL_IS_SIGN = (IsolationForest, LocalOutlierFactor)

# The distinct warnings a model may log per worker, and the characters of each: a model
# whose warnings quote the values it was given must not fill the log, nor the memory.
_WARNINGS_LOGGED = 32
_WARNING_CHARS = 500

_FRAME_DTYPES = {"float": "float64", "int": "int64", "bool": "bool", "category": "object"}
_NULLABLE_FRAME_DTYPES = {**_FRAME_DTYPES, "int": "float64", "bool": "object"}


@dataclass(frozen=True)
class Prediction:
    """The model's answer for n rows, in row order.

    ``values`` holds class labels (classifiers), numbers (regressors), 1 or -1
    (outlier detectors, -1 for an outlier) or cluster indexes (clusterers): n
    values, or n x len(targets) for a model with several outputs.
    ``probabilities`` is n x len(classes), columns in ``classes`` order, when a
    one-output classifier has ``predict_proba``; ``scores`` are an outlier
    detector's ``decision_function`` (negative for an outlier).
    """

    values: np.ndarray
    probabilities: np.ndarray | None = None
    classes: tuple[Any, ...] | None = None
    scores: np.ndarray | None = None
    targets: tuple[str, ...] | None = None


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
    # The compiled artifact that predicts in its place, when there is one (onnx_runtime.py).
    compiled: OnnxRuntime | None = None

    def __post_init__(self) -> None:
        # Compiled once: every front end judges rows by these rules.
        self.rules = RuleSet(self.manifest, self.range_policy)
        # Missing values reach the model as NaN: let scikit-learn see them.
        self._assume_finite = not self.rules.nullable
        # An estimator fitted on a DataFrame checks column names at predict time
        # (a ColumnTransformer selects columns by name), so it gets a DataFrame.
        self._wants_frame = hasattr(self.estimator, "feature_names_in_")
        task = self.manifest.task
        # A multi-output classifier's predict_proba is a list, one array per target: not served.
        self._has_probabilities = (
            task == "classification"
            and self.manifest.targets is None
            and hasattr(self.estimator, "predict_proba")
        )
        self._has_scores = task == "outlier_detection"
        # A one-output classifier's fitted labels (a multi-output one has a list): the label of
        # the most probable class, and a compiled model's labels back with their types.
        one_output_classifier = task == "classification" and self.manifest.targets is None
        self._classes = np.asarray(getattr(self.estimator, "classes_", ()) if one_output_classifier else ())
        self._class_index = {label: index for index, label in enumerate(self._classes.tolist())}
        last = final_step(self.estimator)
        self._one_pass = (self._has_probabilities and isinstance(last, _LABEL_IS_ARGMAX)) or (
            self._has_scores and isinstance(last, _LABEL_IS_SIGN)
        )
        # Label types per target, for chains that predict labels as floats (ClassifierChain).
        self._label_dtype = _label_dtype(self.estimator) if task == "classification" else None
        # The (category, message) of each warning the estimator raised while predicting, logged once.
        self._warned: set[tuple[str, str]] = set()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def has_probabilities(self) -> bool:
        return self._has_probabilities

    @property
    def has_scores(self) -> bool:
        """True for outlier detectors: each answer carries the decision function's score."""
        return self._has_scores

    def predict(self, matrix: np.ndarray | pd.DataFrame) -> Prediction:
        """Predict on a validated matrix whose columns follow the manifest's order.

        All rows go to the estimator in one vectorised call.
        """
        try:
            outputs = self.compiled.run(matrix) if self.compiled is not None else None
            if outputs is None:
                values, probabilities, scores = self._sklearn_outputs(matrix)
            else:
                values, probabilities, scores = self._compiled_outputs(outputs)
        except Exception as error:
            raise PredictionFailed(self.name, self.version) from error
        values = self._checked(values, len(matrix), probabilities, scores)
        return Prediction(
            values=values,
            probabilities=probabilities,
            classes=self.manifest.classes,
            scores=scores,
            targets=self.manifest.targets,
        )

    @property
    def runtime(self) -> str:
        """What predicts: "onnx" (the compiled artifact) or "sklearn" (the pickled estimator)."""
        return "onnx" if self.compiled is not None and self.compiled.failed is None else "sklearn"

    def _sklearn_outputs(
        self, matrix: np.ndarray | pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        # Building the input is part of the model's side: a value the rules
        # pass that the model cannot take is its fault, not the client's.
        model_input = self._model_input(matrix)
        # Every value was checked finite before it got here, so scikit-learn
        # need not scan the matrix again (a tenth of a small request's time);
        # what the model makes of it is checked afterwards.
        with (
            _ESTIMATOR_LOCK,
            config_context(assume_finite=self._assume_finite),
            self._warnings_logged(),
        ):
            probabilities = scores = None
            if self._has_probabilities:
                probabilities = np.asarray(self.estimator.predict_proba(model_input), dtype=np.float64)
            if self._has_scores:
                scores = np.asarray(self.estimator.decision_function(model_input), dtype=np.float64)
            if self._one_pass and probabilities is not None:
                values = self._classes.take(probabilities.argmax(axis=1))
            elif self._one_pass and scores is not None:
                values = np.where(scores < 0, -1, 1)
            else:
                values = np.asarray(self.estimator.predict(model_input))
        return values, probabilities, scores

    @contextlib.contextmanager
    def _warnings_logged(self) -> Iterator[None]:
        """Record the warnings the estimator raises while it predicts, and log each once.

        scikit-learn's ensembles replay the process's warnings filters around every
        tree they call (``sklearn.utils.parallel``): with the dozen filters numpy and
        SciPy install that is half of a 200-tree forest's time for a few rows. One
        filter that records everything costs a tenth of it, and a model that warns
        on every call (a feature-names mismatch, an overflow in ``exp``) then says
        so once per worker, in the log, instead of on stderr at each request (at
        most ``_WARNINGS_LOGGED`` distinct warnings per model, each cut to
        ``_WARNING_CHARS``). Called under ``_ESTIMATOR_LOCK``: no other thread
        predicts meanwhile (a warning another thread raises during the call is
        recorded, and logged, with the model's).
        """
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.resetwarnings()  # the copy catch_warnings restores on the way out
                warnings.simplefilter("always")
                yield
        finally:  # a warning said before a failure may tell why the model failed
            for found in caught:
                said = (found.category.__name__, str(found.message)[:_WARNING_CHARS])
                if said not in self._warned and len(self._warned) < _WARNINGS_LOGGED:
                    self._warned.add(said)
                    log.warning(
                        "Model %s version %s warned while predicting: %s: %s", self.name, self.version, *said
                    )

    def _compiled_outputs(
        self, outputs: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The graph's outputs as the estimator's: (label or value, probabilities or scores).

        No lock: onnxruntime runs concurrent calls on one session safely, and
        touches no warnings filter.
        """
        probabilities = scores = None
        if self._has_probabilities:
            probabilities = np.asarray(outputs[1], dtype=np.float64)
        if self._has_scores:
            scores = np.asarray(outputs[1], dtype=np.float64).reshape(-1)
        if self._one_pass and probabilities is not None:
            # As the estimator does it: the most probable class, the first of a tie.
            return self._classes.take(probabilities.argmax(axis=1)), probabilities, scores
        values = np.asarray(outputs[0])
        if self.manifest.task == "classification":
            labels = values.reshape(-1).tolist()
            values = self._classes.take([self._class_index[label] for label in labels])
        return values, probabilities, scores

    def _checked(
        self, values: np.ndarray, rows: int, probabilities: np.ndarray | None, scores: np.ndarray | None
    ) -> np.ndarray:
        """The values in the manifest's shape; PredictionFailed for an answer the service cannot give."""
        outputs = self.manifest.outputs
        if values.size != rows * outputs or (outputs > 1 and values.shape != (rows, outputs)):
            shape = "x".join(map(str, values.shape))
            raise PredictionFailed(self.name, self.version) from ValueError(
                f"the model answered {rows} row(s) with an array of shape {shape}; its manifest "
                f"expects {outputs} value(s) per row"
            )
        if outputs == 1:
            values = values.reshape(rows)
        for name, numbers in (("probability", probabilities), ("score", scores)):
            if numbers is not None and not np.isfinite(numbers).all():
                raise PredictionFailed(self.name, self.version) from ValueError(
                    f"the model returned a non-finite {name}"
                )
        if self.manifest.task == "regression":
            values = values.astype(np.float64, copy=False)
            if not np.isfinite(values).all():
                raise PredictionFailed(self.name, self.version) from ValueError(
                    "the regressor returned a non-finite value"
                )
        elif self._label_dtype is not None and values.dtype.kind == "f":
            labels = values.astype(self._label_dtype)
            if np.array_equal(labels, values):
                values = labels
        return values

    @property
    def one_pass(self) -> bool:
        """True when labels come from the probabilities (or scores), with no second pass over the model."""
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


def _label_dtype(estimator: Any) -> np.dtype | None:
    """The integer or boolean type of a classifier's labels (of every target's), if they share one."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return None
    kinds = {np.asarray(labels).dtype for labels in (classes if isinstance(classes, list) else [classes])}
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    return kind if kind.kind in "iub" else None
