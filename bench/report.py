"""The markdown report: settings, one table row per scenario and contender, the goals, and the sections
(the Open Inference Protocol, the model alone, memory, model threads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.goals import goals
from bench.model_alone import ModelTiming
from bench.plan import SERVICE, Planned
from bench.results import Memory, Series, ThreadsSection, cpu, ratio_median, rows, rps
from bench.sections import memory_lines, memory_pair, open_inference_lines, threads_lines
from bench.table import number, rate, ratio, table

GOAL_MEMORY_RATIO = 1.5  # an earlier goal: total PSS with 4 workers at most 1.5x with 1 worker


@dataclass
class Report:
    header: list[tuple[str, str]]
    settings: list[tuple[str, str]]
    plan: list[Planned]
    series: dict[tuple[str, str], Series]  # (scenario label, contender label)
    model_alone: list[ModelTiming]
    unavailable: dict[str, str] = field(default_factory=dict)  # server name: why it was not measured
    memory: list[Memory] | None = None  # None: not measured
    threads: ThreadsSection | None = None  # None: not measured
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        every = list(self.series.values()) + [
            v.series for v in (self.threads.variants if self.threads else [])
        ]
        return any(not series.ok for series in every)


SCENARIO_HEAD = (
    "Scenario",
    "Contender",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "CPU µs/req",
    "non-2xx+errors",
    "req/s service÷this",
    "CPU this÷service",
    "Status",
)


def scenario_rows(report: Report) -> list[list[str]]:
    body = []
    for planned in report.plan:
        service = report.series.get((planned.label, SERVICE))
        for contender in planned.contenders:
            series = report.series.get((planned.label, contender.label))
            if series is None:
                # Why is in the Problems section: a compile error is too long for a cell.
                body.append([planned.label, contender.label] + ["-"] * 8 + ["n/a"])
                continue
            versus = service is not None and contender.label != SERVICE
            body.append(
                [
                    planned.label,
                    contender.label,
                    rate(series.median(rps)),
                    number(series.median(rows)),
                    number(series.median(lambda s: s.p50_ms), 1),
                    number(series.median(lambda s: s.p99_ms), 1),
                    number(series.median(cpu)),
                    str(series.faults),
                    ratio(ratio_median(service, series, rps)) if versus else "-",
                    ratio(ratio_median(series, service, cpu)) if versus else "-",
                    "ok" if series.ok else "FAIL",
                ]
            )
    return body


def _verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else ("PASS" if passed else "FAIL")


def goal_rows(report: Report) -> list[list[str]]:
    body = []
    for goal in goals():
        body.append(
            [
                goal.text,
                goal.shown_threshold,
                ratio(goal.measured(report.series)),
                " ".join(f"{value:.2f}" for value in goal.per_run(report.series)) or "-",
                f"**{_verdict(goal.passed(report.series))}**",
            ]
        )
    one, many = memory_pair(report.memory or [], "service")
    memory = many.total_kb / one.total_kb if one and many and one.total_kb else None
    body.append(
        [
            f"(earlier) service total PSS, {many.workers if many else 4} workers ÷ 1 worker",
            f"≤ {GOAL_MEMORY_RATIO:.2f}x",
            ratio(memory),
            "-",
            f"**{_verdict(None if memory is None else memory <= GOAL_MEMORY_RATIO)}**",
        ]
    )
    return body


GOAL_HEAD = ("Goal", "Threshold", "Measured (median of runs)", "Per run", "Result")


def render(report: Report) -> str:
    runs = max((len(series.samples) for series in report.series.values()), default=0)
    lines = ["# Benchmark: the model service against a tutorial Flask app and a bare WSGI app", ""]
    lines += ["## Machine and settings", ""]
    lines += table(("", ""), [[key, value] for key, value in report.header + report.settings])
    lines += ["", "## Throughput and latency", ""]
    lines += [
        f"Medians over {runs} interleaved run(s). CPU µs/req is the user+system time of the whole "
        "Gunicorn tree (master and workers) during the measured run, per request. Ratios are taken "
        "within each run, then the median; above 1.00x the service (its default answer, batching "
        "on, scikit-learn) does better than this contender.",
        "",
    ]
    lines += table(SCENARIO_HEAD, scenario_rows(report))
    lines += ["", "## Goals", ""]
    lines += [
        "Each ratio is taken within a run (both sides measured a minute apart), then the median "
        "over runs. Goals (1) to (3) are the issue's sections; the last one is an earlier issue's.",
        "",
    ]
    lines += table(GOAL_HEAD, goal_rows(report))
    lines += ["", "## Open Inference Protocol", ""]
    lines += open_inference_lines(report.plan, report.series)
    lines += ["", "## The model alone", ""]
    lines += [
        "`predict_proba` timed in one process on the same rows, native pools at the workers' "
        "setting, called as the baselines call it: the floor under their time per request. "
        "The service's own call can take less: it runs the estimator under one warnings filter, "
        "where scikit-learn's ensembles replay every filter of the process around each tree.",
        "",
    ]
    lines += table(
        ("Model", "Rows per call", "µs per call", "rows/s"),
        [
            [t.model, str(t.rows), number(t.us_per_call, 1), number(t.rows_per_second)]
            for t in report.model_alone
        ],
    )
    lines += ["", "## Memory", ""]
    lines += memory_lines(report.memory) if report.memory is not None else ["Not measured (--quick)."]
    lines += ["", "## Model threads", ""]
    lines += threads_lines(report.threads) if report.threads is not None else ["Not measured (--quick)."]
    every = list(report.series.items())
    if report.threads is not None:
        every += [
            ((report.threads.scenario, f"service, model threads {v.model_threads}"), v.series)
            for v in report.threads.variants
        ]
    problems = [
        f"- {label} / {contender}: {error.splitlines()[0]}"
        for (label, contender), series in every
        for error in dict.fromkeys(series.errors)
    ]
    unavailable = [f"- {server} not measured: {reason}" for server, reason in report.unavailable.items()]
    if report.notes or problems or unavailable:
        lines += ["", "## Problems", ""] + [f"- {note}" for note in report.notes] + unavailable + problems
    return "\n".join(lines) + "\n"
