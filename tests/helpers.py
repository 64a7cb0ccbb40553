"""Building small models and stores for tests."""

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

from service.models import ModelStore
from service.models.introspect import describe_estimator
from service.models.manifest import Feature


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


def edit_manifest(directory: Path, **changes: Any) -> None:
    """Change top-level manifest fields in place (the artifact hash stays valid)."""
    path = directory / "model.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


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
