"""A bench-only model whose prediction is dominated by BLAS: the "Model threads" section's subject.

The demo models barely touch a native thread pool (a random forest predicts in
Python-driven tree walks, logistic regression on 4 features is one tiny matmul),
so SERVICE_MODEL_THREADS changes nothing for them. A two-layer perceptron of 256
units spends a 1,000-row batch in matrix products big enough for OpenBLAS to
split across threads, which is what the worker/thread sizing rule is about.

It is trained into the benchmark's store exactly as ``service.models.demo``
trains the demo models (same split, manifest and ``ModelStore.add``), so the
service verifies and loads it like any other model; only the threads section
serves it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from service.models.demo import Demo, train
from service.models.store import ModelStore

NAME = "mlp"
HIDDEN_LAYERS = (256, 256)
# Enough epochs for a sensible classifier; convergence does not matter here, only
# the shape of the matrices a prediction multiplies, and training stays ~1 s.
MAX_ITER = 50


def _breast_cancer() -> tuple[pd.DataFrame, np.ndarray, str]:
    # The demo breast_cancer model's feature names, so bench.bodies builds the same rows for both.
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.data.set_axis([c.replace(" ", "_") for c in bunch.data.columns], axis=1)
    return frame, bunch.target_names[bunch.target.to_numpy()], "sklearn.datasets.load_breast_cancer"


MLP = Demo(
    name=NAME,
    description=(
        "Malignant or benign tumour (two 256-unit layers, standardised inputs): "
        "a BLAS-bound model for the benchmark's model threads section."
    ),
    load=_breast_cancer,
    estimator=lambda: make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=HIDDEN_LAYERS, max_iter=MAX_ITER, random_state=0),
    ),
    descriptions={},
)


def ensure_mlp(store: Path) -> bool:
    """Train the model into ``store`` as version 1 unless some version is there; True if trained."""
    models = ModelStore(store)
    if models.versions(NAME):
        return False
    # The fit takes about a second; one native thread keeps its weights independent of the core count.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        train(MLP, models)
    return True
