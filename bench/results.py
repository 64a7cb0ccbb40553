"""The measured figures, and the medians and ratios the report shows."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One measured wrk run against one server."""

    requests: int
    requests_per_second: float
    rows_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    non_2xx: int
    socket_errors: int
    error: str | None = None  # wrk or the server failed; no figures then

    @property
    def measured(self) -> bool:
        return self.error is None and self.requests > 0

    @property
    def ok(self) -> bool:
        return self.measured and self.non_2xx == 0 and self.socket_errors == 0

    @property
    def faults(self) -> int:
        return self.non_2xx + self.socket_errors

    @classmethod
    def failed(cls, error: str) -> Sample:
        return cls(0, 0.0, 0.0, 0.0, 0.0, None, 0, 0, error)


@dataclass(frozen=True)
class Series:
    """One server's samples for one scenario, a sample per run in run order."""

    samples: Sequence[Sample]

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(sample.ok for sample in self.samples)

    @property
    def faults(self) -> int:
        return sum(sample.faults for sample in self.samples)

    @property
    def errors(self) -> list[str]:
        return [sample.error for sample in self.samples if sample.error]

    def median(self, figure: Callable[[Sample], float | None]) -> float | None:
        values = [figure(s) for s in self.samples if s.measured]
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None


def ratios(top: Series, bottom: Series, figure: Callable[[Sample], float | None]) -> list[float]:
    """figure(top) / figure(bottom) for each run in which both were clean, in run order."""
    found = []
    for a, b in zip(top.samples, bottom.samples, strict=False):
        if a.ok and b.ok:
            x, y = figure(a), figure(b)
            if x is not None and y:
                found.append(x / y)
    return found


def ratio_median(top: Series, bottom: Series, figure: Callable[[Sample], float | None]) -> float | None:
    """Median over runs of figure(top) / figure(bottom), from runs where both were clean.

    Both servers of one run saw the same machine within a minute of each other, so
    their ratio is steadier on a noisy machine than a ratio of medians would be.
    """
    found = ratios(top, bottom, figure)
    return statistics.median(found) if found else None


def rps(sample: Sample) -> float:
    return sample.requests_per_second


def rows(sample: Sample) -> float:
    return sample.rows_per_second


def cpu(sample: Sample) -> float | None:
    return sample.cpu_us_per_request


def p50(sample: Sample) -> float:
    return sample.p50_ms


def p99(sample: Sample) -> float:
    return sample.p99_ms


@dataclass(frozen=True)
class Memory:
    """PSS of one server's processes after a short load."""

    server: str
    workers: int
    processes: Sequence[tuple[int, str, int]] = field(default_factory=tuple)  # pid, role, kB
    error: str | None = None

    @property
    def total_kb(self) -> int:
        return sum(kb for _, _, kb in self.processes)

    @property
    def workers_kb(self) -> int:
        return sum(kb for _, role, kb in self.processes if role == "worker")

    @property
    def measured(self) -> bool:
        return self.error is None and bool(self.processes)


@dataclass(frozen=True)
class WorkerThreads:
    """One worker after one measured run of the model threads section."""

    os_threads: int  # Threads: in /proc/PID/status
    ran: int  # threads whose CPU time grew during the load: the ones that competed for cores


@dataclass(frozen=True)
class ThreadsVariant:
    """The service at one SERVICE_MODEL_THREADS setting."""

    model_threads: int
    series: Series
    workers: Sequence[Sequence[WorkerThreads]]  # per run, per worker (by pid)

    def most(self, figure: Callable[[WorkerThreads], int]) -> list[int]:
        """Per worker, the highest figure seen after any run."""
        per_worker: list[int] = []
        for run in self.workers:
            for index, worker in enumerate(run):
                if index == len(per_worker):
                    per_worker.append(figure(worker))
                else:
                    per_worker[index] = max(per_worker[index], figure(worker))
        return per_worker


@dataclass(frozen=True)
class ThreadsSection:
    """One model's batches served with each SERVICE_MODEL_THREADS setting, and the model alone."""

    scenario: str
    cores: int
    workers: int
    request_threads: int  # Gunicorn threads per worker
    variants: Sequence[ThreadsVariant]
    alone: Sequence[tuple[int, float]]  # (native threads, seconds per predict_proba call)
    master_threads: Sequence[int] = ()  # each server's master, read after its workers forked
