"""The report's Open Inference Protocol, memory and model threads sections (see bench/README.md)."""

from __future__ import annotations

from bench.mlp import HIDDEN_LAYERS
from bench.plan import GRPC, OPEN_INFERENCE, SERVICE, V2_BINARY, V2_JSON, Planned
from bench.results import Memory, Series, ThreadsSection, cpu, ratio_median, rows, rps
from bench.table import number, rate, ratio, table

PROTOCOLS = {SERVICE: "v1 JSON", V2_JSON: "V2 JSON", V2_BINARY: "V2 binary", GRPC: "gRPC"}


def open_inference_lines(plan: list[Planned], series: dict[tuple[str, str], Series]) -> list[str]:
    """Per scenario that asks the service over the Open Inference Protocol, each protocol's req/s and
    CPU per request, and its ratios to v1's (within each run, then the median). No goal: a comparison."""
    lines = [
        "The service's server and the same single rows, asked four ways: its v1 JSON route "
        "(`POST /v1/models/NAME/predict`), V2 JSON (`POST /v2/models/NAME/infer`), V2 binary (that "
        "route with the binary tensor extension: raw float64s after a JSON header, outputs as raw "
        "bytes) and gRPC (`ModelInfer` with raw input contents, loaded by h2load over HTTP/2 instead "
        "of wrk). Medians over runs; each ratio to v1 is taken within a run, then the median: above "
        "1.00x, more requests per second, or more CPU per request, than v1. For information, not a "
        "goal. The load generator shares the cores with the server, and h2load's cost per request "
        "is not wrk's: CPU µs/req, the server's alone, compares the protocols more fairly than req/s.",
        "",
    ]
    body = []
    for planned in plan:
        asked = [c.label for c in planned.contenders if c.label in OPEN_INFERENCE]
        if not set(asked) - {SERVICE}:
            continue
        v1 = series.get((planned.label, SERVICE))
        for label in sorted(asked, key=OPEN_INFERENCE.index):
            found = series.get((planned.label, label))
            if found is None:
                body.append([planned.label, PROTOCOLS[label]] + ["-"] * 4)
                continue
            versus = v1 is not None and label != SERVICE
            body.append(
                [
                    planned.label,
                    PROTOCOLS[label],
                    rate(found.median(rps)),
                    number(found.median(cpu)),
                    ratio(ratio_median(found, v1, rps)) if versus else "-",
                    ratio(ratio_median(found, v1, cpu)) if versus else "-",
                ]
            )
    if not body:
        return ["Not measured."]
    head = ("Scenario", "Protocol", "req/s", "CPU µs/req", "req/s ÷ v1", "CPU µs/req ÷ v1")
    return lines + table(head, body)


def memory_lines(memory: list[Memory]) -> list[str]:
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
    lines += table(("Server", "Workers", "PSS per process (MB)", "Workers (MB)", "Total (MB)"), body)
    lines.append("")
    for server in dict.fromkeys(entry.server for entry in memory):
        one, four = memory_pair(memory, server)
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
    _, frozen = memory_pair(memory, "service")
    _, unfrozen = memory_pair(memory, "service-unfrozen")
    if frozen is not None and unfrozen is not None and unfrozen.total_kb:
        lines.append(
            f"- gc.freeze(): {frozen.workers} workers take {frozen.total_kb / 1024:.0f} MB in total, "
            f"against {unfrozen.total_kb / 1024:.0f} MB without it "
            f"({frozen.total_kb / unfrozen.total_kb:.2f}x)"
        )
    return lines


def memory_pair(memory: list[Memory], server: str) -> tuple[Memory | None, Memory | None]:
    found = {entry.workers: entry for entry in memory if entry.server == server and entry.measured}
    one = found.get(1)
    many = [found[count] for count in sorted(found) if count > 1]
    return one, (many[-1] if many else None)


def threads_lines(section: ThreadsSection) -> list[str]:
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
    lines += table(head, body)
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
