"""Building small models and stores for tests, and the requests the app tests send them."""

from __future__ import annotations

import contextlib
import json
import random
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.models import ModelStore
from service.models.introspect import describe_estimator
from service.models.manifest import Feature
from tests.servers import JSON

DEMO_MODELS = ("breast_cancer", "diabetes", "iris")
# Two iris rows by feature name.
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.4, "petal_width": 2.1}


def store_model(
    store_root: Path, estimator: Any, name: str, version: str, sample: pd.DataFrame | None = None
) -> Path:
    """Store a fitted estimator with an introspected manifest; returns its directory."""
    manifest = describe_estimator(estimator, name=name, version=version, sample=sample)
    scratch = store_root / f".{name}-{version}.joblib"
    joblib.dump(estimator, scratch)
    try:
        return ModelStore(store_root).add(scratch, manifest)
    finally:
        scratch.unlink()


MIXED_MODEL = "mixed"
MIXED_COLOURS = ("blue", "green", "red")


def store_mixed_model(store_root: Path) -> Path:
    """Store the model with one feature of every type; returns its directory.

    "mixed" version 1 classifies rows as "big" or "small" from ``size`` (a float,
    0 to 10), ``count`` (an int, 0 to 20), ``flag`` (a bool) and ``colour`` (a
    category of MIXED_COLOURS), a pipeline that one-hot encodes the colour.
    """
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "size": rng.uniform(0, 10, 300),
            "count": rng.integers(0, 21, 300),
            "flag": rng.integers(0, 2, 300).astype(bool),
            "colour": rng.choice(["red", "green", "blue"], 300),
        }
    )
    labels = np.where(frame["size"] + frame["count"] / 2 + frame["flag"] * 3 > 10, "big", "small")
    pipeline = make_pipeline(
        ColumnTransformer([("colour", OneHotEncoder(), ["colour"])], remainder="passthrough"),
        LogisticRegression(max_iter=500),
    )
    return store_model(store_root, pipeline.fit(frame, labels), MIXED_MODEL, "1", sample=frame)


def edit_manifest(directory: Path, **changes: Any) -> None:
    """Change top-level manifest fields in place (the artifact hash stays valid)."""
    path = directory / "model.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of a file: an artifact that no longer matches its hash."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def tiny_frame(rows: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.uniform(0, 10, size=rows)})
    return frame, np.where(frame["a"] + frame["b"] / 10 > 0.5, "high", "low")


def random_rows(features: Iterable[Feature], rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Valid rows drawn across each (bounded, numeric) feature's whole accepted range."""
    features = list(features)
    rows = []
    for _ in range(count):
        row: dict[str, Any] = {}
        for feature in features:
            value = rng.uniform(feature.min, feature.max)
            row[feature.name] = round(value) if feature.type == "int" else round(value, 4)
        rows.append(row)
    return rows


def stored_model_rows(store: Path, name: str, rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Valid rows for a stored model (version 1), drawn across each feature's accepted range."""
    return random_rows(ModelStore(store).manifest(name, "1").features, rng, count)


def feature_names(store: Path, name: str) -> tuple[str, ...]:
    return ModelStore(store).manifest(name, "1").feature_names


def post(client: FlaskClient, path: str, body: Any, request_id: str | None = None) -> Any:
    """POST ``body`` as JSON through the test client, with the client's own request id if given."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    return client.post(path, data=json.dumps(body), content_type=JSON, headers=headers)


def boom() -> Any:
    """A view that fails with an internal detail no answer may show."""
    raise RuntimeError("kaboom: an internal detail")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail the test if the block runs longer than ``seconds`` (main thread only).

    SIGALRM interrupts a blocking system call (opening a FIFO that nobody writes
    to, say), so a hang fails the test instead of stopping the run. The failure is
    pytest's own, a BaseException: code under test that catches ``Exception`` or
    ``OSError`` cannot swallow it. The alarm repeats each second until the block
    ends, in case one was swallowed anyway.
    """

    def expire(signum: int, frame: FrameType | None) -> None:
        pytest.fail(f"still running after {seconds}s: something blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
