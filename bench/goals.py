"""The issue's goals as ratios between contenders, each taken within a run, then the median.

Two contenders measured a minute apart in the same run saw nearly the same
machine, so their ratio is steadier on a noisy machine than a ratio of medians.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from bench.plan import BARE, COMPACT, ONNX, SERVICE, TUTORIAL, UNBATCHED
from bench.results import Sample, Series, p50, p99, ratio_median, ratios, rows, rps

Key = tuple[str, str]  # (scenario label, contender label)
BATCH_SCENARIOS = tuple(f"{m} batch 1000 @{c}" for m in ("iris", "breast_cancer") for c in (1, 4))


@dataclass(frozen=True)
class Goal:
    text: str
    top: Key
    bottom: Key
    figure: Callable[[Sample], float | None]
    threshold: float
    strict: bool = False  # "lower than": the ratio must exceed the threshold, not only reach it

    @property
    def shown_threshold(self) -> str:
        return f"{'>' if self.strict else '≥'} {self.threshold:.2f}x"

    def measured(self, series: dict[Key, Series]) -> float | None:
        if self.top not in series or self.bottom not in series:
            return None
        return ratio_median(series[self.top], series[self.bottom], self.figure)

    def per_run(self, series: dict[Key, Series]) -> list[float]:
        if self.top not in series or self.bottom not in series:
            return []
        return ratios(series[self.top], series[self.bottom], self.figure)

    def passed(self, series: dict[Key, Series]) -> bool | None:
        value = self.measured(series)
        if value is None:
            return None
        return (operator.gt if self.strict else operator.ge)(value, self.threshold)


def goals() -> list[Goal]:
    iris8, iris64 = "iris single @8", "iris single @64"
    forest1, forest64 = "breast_cancer single @1", "breast_cancer single @64"
    found = [
        Goal(
            "(1) iris single rows @8: service req/s ÷ tutorial", (iris8, SERVICE), (iris8, TUTORIAL), rps, 1.0
        )
    ]
    for label in BATCH_SCENARIOS:
        text = f"(1) {label}: %s answer rows/s ÷ bare arrays"
        found.append(Goal(text % "compact", (label, COMPACT), (label, BARE), rows, 0.8))
        found.append(Goal(text % "default", (label, SERVICE), (label, BARE), rows, 0.5))
    found += [
        Goal(
            "(2) forest single rows @64: batching on ÷ off, req/s",
            (forest64, SERVICE),
            (forest64, UNBATCHED),
            rps,
            5.0,
        ),
        Goal(
            "(2) forest single rows @64 ÷ iris single rows @64, req/s",
            (forest64, SERVICE),
            (iris64, SERVICE),
            rps,
            0.5,
        ),
        Goal(
            "(2) forest single rows @64: p99 batching off ÷ on (on is lower)",
            (forest64, UNBATCHED),
            (forest64, SERVICE),
            p99,
            1.0,
            strict=True,
        ),
        Goal(
            "(2) iris single rows @8: batching on ÷ off, req/s",
            (iris8, SERVICE),
            (iris8, UNBATCHED),
            rps,
            0.95,
        ),
        Goal(
            "(3) forest single rows @1: p50 scikit-learn ÷ ONNX (ONNX is lower)",
            (forest1, SERVICE),
            (forest1, ONNX),
            p50,
            10.0,
        ),
    ]
    return found
