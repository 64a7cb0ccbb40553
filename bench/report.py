"""The markdown report: settings, one table row per scenario, the model alone, memory, threads, goals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.bodies import Scenario
from bench.mlp import HIDDEN_LAYERS
from bench.model_alone import ModelTiming
from bench.results import SERVERS, Memory, Series, ThreadsSection, cpu, ratio_median, rows, rps

GOAL_NAIVE_RATIO = 1.0  # (1) service req/s at least the tutorial app's
GOAL_BATCH_RATIO = 0.8  # (2) service rows/s on 1,000-row batches at least 0.8x the bare app's
GOAL_MEMORY_RATIO = 1.5  # (4) total PSS with 4 workers at most 1.5x with 1 worker


@dataclass
class Report:
    header: list[tuple[str, str]]
    settings: list[tuple[str, str]]
    scenarios: list[Scenario]
    series: dict[tuple[str, str], Series]  # (scenario label, server)
    model_alone: list[ModelTiming]
    memory: list[Memory] | None = None  # None: not measured
    threads: ThreadsSection | None = None  # None: not measured
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        every = list(self.series.values()) + [
            v.series for v in (self.threads.variants if self.threads else [])
        ]
        return any(not series.ok for series in every)


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    """Requests per second: whole numbers, but slow scenarios keep their first digits."""
    if value is None:
        return "-"
    return number(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cells(series: Sequence[Series], figure, digits: int = 0) -> str:
    return " / ".join(number(s.median(figure), digits) for s in series)


def _rates(series: Sequence[Series]) -> str:
    return " / ".join(rate(s.median(rps)) for s in series)


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def scenario_rows(report: Report) -> list[list[str]]:
    body = []
    for scenario in report.scenarios:
        trio = [report.series[(scenario.label, server)] for server in SERVERS]
        service, bare, naive = trio
        body.append(
            [
                scenario.label,
                _rates(trio),
                _cells(trio, rows),
                _cells(trio, lambda s: s.p50_ms, 1),
                _cells(trio, lambda s: s.p99_ms, 1),
                _cells(trio, cpu),
                " / ".join(str(s.faults) for s in trio),
                ratio(ratio_median(service, bare, rps)),
                ratio(ratio_median(service, naive, rps)),
                ratio(ratio_median(bare, service, cpu)),
                ratio(ratio_median(naive, service, cpu)),
                "ok" if all(s.ok for s in trio) else "FAIL",
            ]
        )
    return body


SCENARIO_HEAD = (
    "Scenario",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "non-2xx+errors",
    "req/s svc÷bare",
    "req/s svc÷naive",
    "CPU bare÷svc",
    "CPU naive÷svc",
    "Status",
)


def _memory_lines(memory: list[Memory]) -> list[str]:
    lines = [
        "PSS (proportional set size: shared pages split between the processes sharing them) of",
        "every process, read from /proc/PID/smaps_rollup after a short load "
        "(single-row iris, then breast_cancer 1,000-row batches). service-unfrozen is the service",
        "without gc.freeze() before the fork (bench/gunicorn_unfrozen.conf.py).",
        "",
    ]
    body = []
    for entry in memory:
        if not entry.measured:
            body.append([entry.server, str(entry.workers), f"FAIL: {entry.error}", "-", "-"])
            continue
        per_process = ", ".join(f"{role} {kb / 1024:.1f}" for _, role, kb in entry.processes)
        body.append(
            [
                entry.server,
                str(entry.workers),
                per_process,
                f"{entry.workers_kb / 1024:.1f}",
                f"{entry.total_kb / 1024:.1f}",
            ]
        )
    lines += _table(("Server", "Workers", "PSS per process (MB)", "Workers (MB)", "Total (MB)"), body)
    lines.append("")
    for server in dict.fromkeys(entry.server for entry in memory):
        one, four = _memory_pair(memory, server)
        if one is None or four is None:
            continue
        one_worker = one.workers_kb
        lines.append(
            f"- {server}: total with {four.workers} workers / total with 1 worker = "
            f"**{four.total_kb / one.total_kb:.2f}x**; {four.workers} workers' sum / the 1-worker "
            f"server's worker = {four.workers_kb / one_worker:.2f}x"
            if one_worker
            else f"- {server}: the 1-worker server reported no worker"
        )
    _, frozen = _memory_pair(memory, "service")
    _, unfrozen = _memory_pair(memory, "service-unfrozen")
    if frozen is not None and unfrozen is not None and unfrozen.total_kb:
        lines.append(
            f"- gc.freeze(): {frozen.workers} workers take {frozen.total_kb / 1024:.0f} MB in total, "
            f"against {unfrozen.total_kb / 1024:.0f} MB without it "
            f"({frozen.total_kb / unfrozen.total_kb:.2f}x)"
        )
    return lines


def _memory_pair(memory: list[Memory], server: str) -> tuple[Memory | None, Memory | None]:
    found = {entry.workers: entry for entry in memory if entry.server == server and entry.measured}
    one = found.get(1)
    many = [found[count] for count in sorted(found) if count > 1]
    return one, (many[-1] if many else None)


def _threads_lines(section: ThreadsSection) -> list[str]:
    cores, workers = section.cores, section.workers
    alone = ", ".join(f"{seconds * 1000:.1f} ms with {count}" for count, seconds in section.alone)
    layers = " and ".join(map(str, HIDDEN_LAYERS))
    lines = [
        f"{section.scenario}, the service alone serving only `mlp` (bench/mlp.py: hidden layers of "
        f"{layers} units, so a batch is mostly OpenBLAS matrix products), {workers} workers on "
        f"{cores} cores: SERVICE_MODEL_THREADS=1 (the default) against one native thread per core "
        "in every worker. Same wrk settings and interleaving as above; medians.",
        "",
        f"The model alone, one 1,000-row `predict_proba` in one process: {alone} native thread(s).",
        "",
    ]
    body = []
    for variant in section.variants:
        series, threads = variant.series, variant.model_threads
        total = workers * threads
        body.append(
            [
                str(threads),
                f"{workers} x {threads} = {total} {'≤' if total <= cores else '>'} {cores}",
                rate(series.median(rps)),
                number(series.median(rows)),
                number(series.median(lambda s: s.p50_ms), 1),
                number(series.median(lambda s: s.p99_ms), 1),
                number(series.median(cpu)),
                ", ".join(str(n) for n in variant.most(lambda w: w.os_threads)) or "-",
                ", ".join(str(n) for n in variant.most(lambda w: w.ran)) or "-",
                str(series.faults),
                "ok" if series.ok else "FAIL",
            ]
        )
    head = (
        "Model threads",
        "Workers x model threads vs cores",
        "req/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "OS threads per worker",
        "Threads that ran, per worker",
        "errors",
        "Status",
    )
    lines += _table(head, body)
    lines += [
        "",
        "OS threads: `Threads:` in each worker's /proc/PID/status after its runs (the most seen). "
        "It counts idle threads: each OpenBLAS library loaded (numpy's, SciPy's) starts a pool "
        "sized to the cores whatever the limit, which only decides how many of them work. "
        "Threads that ran: those whose CPU time grew during a run (/proc/PID/task/TID/stat), "
        f"that is the worker's main thread, its {section.request_threads} request threads, and "
        "the native pool threads that helped a matrix product: those compete for the cores.",
    ]
    if section.master_threads:
        lines += [
            "",
            "Master: "
            + ", ".join(str(count) for count in section.master_threads)
            + " OS thread(s) after loading and warming up the model and forking the workers "
            "(1: no native pool was started before the fork).",
        ]
    return lines


def _verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else ("PASS" if passed else "FAIL")


def _goal(text: str, value: float | None, passed: bool | None) -> str:
    shown = "" if value is None else f"{ratio(value)} -> "
    return f"{text}: {shown}**{_verdict(passed)}**"


def goal_lines(report: Report) -> list[str]:
    lines = []
    labels = {scenario.label: scenario for scenario in report.scenarios}

    def pair(label: str, other: str) -> float | None:
        if label not in labels:
            return None
        return ratio_median(report.series[(label, "service")], report.series[(label, other)], rps)

    naive_ratio, bare_ratio = pair("iris single @8", "naive"), pair("iris single @8", "bare")
    passed = None if naive_ratio is None else naive_ratio >= GOAL_NAIVE_RATIO
    text = f"- (1) iris single-row @8 connections, service req/s ≥ {GOAL_NAIVE_RATIO:.1f}x naive"
    lines.append(_goal(text, naive_ratio, passed) + f" (service ÷ bare: {ratio(bare_ratio)})")
    for model in ("iris", "breast_cancer"):
        batches = [s.label for s in report.scenarios if s.model == model and s.batch]
        found = {label: pair(label, "bare") for label in batches}
        measured = [value for value in found.values() if value is not None]
        passed = all(value >= GOAL_BATCH_RATIO for value in measured) if measured else None
        detail = (
            ", ".join(f"{label}: {ratio(value)}" for label, value in found.items()) or "no batch scenario"
        )
        text = f"- (2) {model} 1,000-row batches, service rows/s ≥ {GOAL_BATCH_RATIO:.1f}x bare"
        lines.append(f"{text}: {detail} -> **{_verdict(passed)}**")
    one, four = _memory_pair(report.memory or [], "service")
    memory_ratio = four.total_kb / one.total_kb if one and four and one.total_kb else None
    text = (
        f"- (4) service total PSS with {four.workers if four else 4} workers ≤ {GOAL_MEMORY_RATIO:.1f}x "
        "with 1 worker"
    )
    lines.append(
        _goal(text, memory_ratio, None if memory_ratio is None else memory_ratio <= GOAL_MEMORY_RATIO)
    )
    return lines


def render(report: Report) -> str:
    runs = max((len(series.samples) for series in report.series.values()), default=0)
    lines = ["# Benchmark: the model service against a bare WSGI app and a tutorial Flask app", ""]
    lines += ["## Machine and settings", ""]
    lines += _table(("", ""), [[key, value] for key, value in report.header + report.settings])
    lines += ["", "## Throughput and latency", ""]
    lines += [
        f"Medians over {runs} interleaved run(s). Each cell: **service / bare / naive**. "
        "CPU µs/req is the user+system time of the whole Gunicorn tree (master and workers) "
        "during the measured run, per request. Ratios are taken within each run, then the "
        "median; higher is better for the service, 1.00x is parity.",
        "",
    ]
    lines += _table(SCENARIO_HEAD, scenario_rows(report))
    lines += ["", "## The model alone", ""]
    lines += [
        "`predict_proba` timed in one process on the same rows, native pools at the workers' "
        "setting: the floor under every server's time per request.",
        "",
    ]
    lines += _table(
        ("Model", "Rows per call", "µs per call", "rows/s"),
        [
            [t.model, str(t.rows), number(t.us_per_call, 1), number(t.rows_per_second)]
            for t in report.model_alone
        ],
    )
    lines += ["", "## Memory", ""]
    lines += _memory_lines(report.memory) if report.memory is not None else ["Not measured (--quick)."]
    lines += ["", "## Model threads", ""]
    lines += _threads_lines(report.threads) if report.threads is not None else ["Not measured (--quick)."]
    lines += ["", "## Goals", ""]
    lines += goal_lines(report)
    every = list(report.series.items())
    if report.threads is not None:
        every += [
            ((report.threads.scenario, f"service, model threads {v.model_threads}"), v.series)
            for v in report.threads.variants
        ]
    problems = [
        f"- {label} / {server}: {error.splitlines()[0]}"
        for (label, server), series in every
        for error in dict.fromkeys(series.errors)
    ]
    if report.notes or problems:
        lines += ["", "## Problems", ""] + [f"- {note}" for note in report.notes] + problems
    return "\n".join(lines) + "\n"
