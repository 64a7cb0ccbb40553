"""Loading a store into served models: the warm-up prediction decides what serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from sklearn.neighbors import RadiusNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from tests.estimators import FailingClassifier
from tests.helpers import store_model

# Six rows on the diagonal from (5, 5) to (10, 10): far from the all-zeros row.
DIAGONAL = np.full((6, 2), 5.0) + np.arange(6)[:, None]


def test_a_made_up_row_that_fails_is_a_load_warning(
    tmp_path: Path, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """No typical row is known behind a step that learns nothing: the warm-up row is made up (zeros),
    the radius model finds no neighbour for it, and it serves anyway, with a warning."""
    model = make_pipeline(FunctionTransformer(), RadiusNeighborsClassifier()).fit(DIAGONAL, [0, 1] * 3)
    store_model(tmp_path, model, "radius", "1")
    client = make_app(model_store=tmp_path).test_client()
    assert client.get("/ready").status_code == 200
    warnings = client.get("/v1/models/radius").get_json()["warnings"]
    assert len(warnings) == 1 and "made-up example row" in warnings[0]
    assert "ValueError: No neighbors found for test samples" in warnings[0]
    assert warnings[0] in caplog.text
    answer = client.post("/v1/models/radius/predict", json={"features": [8.0, 8.0]})
    assert answer.status_code == 200
    assert answer.get_json()["prediction"] == model.predict([[8.0, 8.0]])[0]


@pytest.mark.parametrize("trusted", ["sample", "statistics"])
def test_a_trusted_row_that_fails_keeps_the_model_from_serving(
    tmp_path: Path, make_app: Callable[..., Flask], trusted: str
) -> None:
    """A typical row from data, or from what the estimator learned, must predict: else not ready."""
    frame = pd.DataFrame(DIAGONAL, columns=["a", "b"])
    if trusted == "sample":
        store_model(tmp_path, FailingClassifier().fit(frame, [0, 1] * 3), "failing", "1", sample=frame)
    else:
        model = make_pipeline(StandardScaler(), FailingClassifier()).fit(DIAGONAL, [0, 1] * 3)
        store_model(tmp_path, model, "failing", "1")
    client = make_app(model_store=tmp_path).test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503
    error = ready.get_json()["models"]["failing"]["error"]
    assert "predicting its typical row failed: RuntimeError: this model always fails" in error
    refused = client.post("/v1/models/failing/predict", json={"features": [7.0, 7.0]})
    assert refused.status_code == 503 and refused.mimetype == "application/problem+json"
