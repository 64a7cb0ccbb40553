"""Baseline (c), "the model alone": ``predict_proba`` timed in this process, no server at all."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

MIN_BLOCK_SECONDS = 0.02  # a timed block this long makes the clock's resolution irrelevant


@dataclass(frozen=True)
class ModelTiming:
    model: str
    rows: int
    seconds_per_call: float

    @property
    def us_per_call(self) -> float:
        return self.seconds_per_call * 1e6

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds_per_call


def _block(call: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return time.perf_counter() - started


def median_call_seconds(call: Callable[[], Any], *, blocks: int, budget_seconds: float) -> float:
    """Median over ``blocks`` timed blocks of the time per call; fewer blocks if over budget."""
    calls = 1
    while (elapsed := _block(call, calls)) < MIN_BLOCK_SECONDS and calls < 100_000:
        calls *= 2
    per_call = [elapsed / calls]
    deadline = time.monotonic() + budget_seconds
    while len(per_call) < blocks and (len(per_call) < 3 or time.monotonic() < deadline):
        per_call.append(_block(call, calls) / calls)
    return statistics.median(per_call)


def time_model(
    model: str, estimator: Any, matrix: np.ndarray, *, threads: int, blocks: int, budget_seconds: float
) -> ModelTiming:
    """Time ``predict_proba`` on ``matrix`` with the native pools held to ``threads``, as in a worker."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    with threadpool_limits(limits=threads):
        seconds = median_call_seconds(
            lambda: estimator.predict_proba(matrix), blocks=blocks, budget_seconds=budget_seconds
        )
    return ModelTiming(model, len(matrix), seconds)
