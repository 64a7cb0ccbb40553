"""The benchmark: three servers, interleaved wrk runs, the model alone, memory, threads; a markdown report.

See bench/README.md. Every server runs on a free 127.0.0.1 port, is stopped by its own
pid whatever happens, and every subprocess has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import wrk
from bench.bodies import (
    BATCH_BODIES,
    BATCH_ROWS,
    SEED,
    SINGLE_BODIES,
    BodyError,
    ModelBodies,
    Scenario,
    first_body,
    write_bodies,
)
from bench.machine import header_lines
from bench.mlp import NAME as MLP_NAME
from bench.mlp import ensure_mlp
from bench.model_alone import time_model
from bench.procs import IDLE_TIMEOUT, REPO_ROOT, Server, ServerError, request, start_baseline, start_service
from bench.report import Report, render
from bench.results import SERVERS, Memory, Sample, Series, ThreadsSection, ThreadsVariant, WorkerThreads
from bench.store import MODELS, load
from service.config import Settings

SINGLE_CONNECTIONS = (1, 8, 64)
BATCH_CONNECTIONS = (1, 4)
THREADS_CONNECTIONS = 4  # as in the busiest batch scenario: more requests in flight than workers
MEMORY_WORKERS = (1, 4)
THREADS_STORE = "threads-store"  # under the run's temporary folder
UNFROZEN_CONF = str(REPO_ROOT / "bench" / "gunicorn_unfrozen.conf.py")
MEMORY_LOAD_SECONDS = 2
TRAIN_TIMEOUT = 600
BASELINES = {"bare": "bench.bare_app", "naive": "bench.naive_app"}


class BenchError(RuntimeError):
    pass


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def non_negative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the service against a bare WSGI app and a tutorial Flask app.",
    )
    # wrk takes whole seconds.
    parser.add_argument("--duration", type=positive, default=10, help="seconds per measured run (10)")
    parser.add_argument("--warmup", type=non_negative, default=2, help="unmeasured seconds before each (2)")
    parser.add_argument("--runs", type=positive, default=3, help="interleaved runs; medians are reported (3)")
    parser.add_argument(
        "--workers", type=positive, default=os.cpu_count() or 1, help="Gunicorn workers (cpu count)"
    )
    parser.add_argument(
        "--threads",
        type=positive,
        default=defaults.threads,
        help="threads per worker (the service's default)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 run of 1 s, two scenarios, no memory or threads"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="report directory")
    parser.add_argument(
        "--store",
        type=Path,
        default=Path(os.environ.get("SERVICE_MODEL_STORE", "model_store")),
        help="model store; the demo models are trained into it if it is empty, and a full run "
        "adds the bench's mlp if missing (SERVICE_MODEL_STORE)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 1, min(args.warmup, 1)
    args.store = args.store.resolve()
    args.model_threads = defaults.model_threads
    return args


def say(message: str) -> None:
    """Progress on stderr: stdout carries the report only."""
    print(message, file=sys.stderr, flush=True)


def ensure_demo_models(store: Path) -> None:
    try:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "models", "demo", "--if-empty"],
            cwd=REPO_ROOT,
            env={**os.environ, "SERVICE_MODEL_STORE": str(store)},
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            check=True,
            timeout=TRAIN_TIMEOUT,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"training the demo models into {store} failed: {error}") from None
    missing = [name for name in MODELS if not (store / name).is_dir()]
    if missing:
        raise BenchError(
            f"{store} holds other models but not {missing}; pass --store with an empty directory"
        )


def ensure_threads_model(store: Path) -> None:
    try:
        if ensure_mlp(store):
            say(f"{MLP_NAME}: trained and stored in {store / MLP_NAME}")
    except (OSError, ValueError) as error:
        raise BenchError(f"training the {MLP_NAME} model into {store} failed: {error}") from None


def build_scenarios(bodies: dict[str, Any], quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("iris", 1, 8, bodies["iris"].single),
            Scenario("iris", BATCH_ROWS, 1, bodies["iris"].batch),
        ]
    found = [Scenario(m, 1, c, bodies[m].single) for m in MODELS for c in SINGLE_CONNECTIONS]
    found += [Scenario(m, BATCH_ROWS, c, bodies[m].batch) for m in MODELS for c in BATCH_CONNECTIONS]
    return found


def settle(server: Server) -> None:
    if not server.wait_idle():
        say(f"warning: {server.name} still busy {IDLE_TIMEOUT:.0f}s after its load stopped; carrying on")


def measure(server: Server, scenario: Scenario, *, seconds: int, warmup: int) -> Sample:
    """A warm-up (not measured), then one measured wrk run with the server's CPU time around it."""
    if not server.alive():
        return Sample.failed(f"{server.name} is not running (exit {server.proc.returncode})")
    url, path, bodies, connections = server.url, scenario.path, scenario.bodies, scenario.connections
    try:
        if warmup:
            wrk.run(url, path, bodies, connections=connections, seconds=warmup)
            # When wrk stops, the requests it left queued are still served: let them finish
            # before the clock starts, or their CPU time lands on the measured requests.
            settle(server)
        before = server.cpu_seconds()
        result = wrk.run(url, path, bodies, connections=connections, seconds=seconds)
        after = server.cpu_seconds()
        # Likewise, this server's backlog must not eat into the next server's run.
        settle(server)
    except wrk.WrkError as error:
        return Sample.failed(str(error))
    finally:
        server.trim_log()
    if not server.alive():
        return Sample.failed(f"{server.name} exited during the run:\n{server.output(10)}")
    if result.requests == 0:
        return Sample.failed(f"no request completed within {seconds} s")
    per_second = result.requests_per_second
    return Sample(
        requests=result.requests,
        requests_per_second=per_second,
        rows_per_second=per_second * scenario.rows,
        p50_ms=result.p50_us / 1000,
        p99_ms=result.p99_us / 1000,
        cpu_us_per_request=(after - before) / result.requests * 1e6,
        non_2xx=result.non_2xx,
        socket_errors=result.socket_errors,
    )


def difference(expected: Any, found: Any, where: str = "") -> str | None:
    """Where two answer documents differ (floats to 1e-9), or None."""
    if isinstance(expected, dict) and isinstance(found, dict):
        if set(expected) != set(found):
            return f"{where or 'top'}: keys {sorted(expected)} != {sorted(found)}"
        for key in expected:
            if (problem := difference(expected[key], found[key], f"{where}.{key}")) is not None:
                return problem
        return None
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return f"{where}: {len(expected)} items != {len(found)}"
        for index, (a, b) in enumerate(zip(expected, found, strict=True)):
            if (problem := difference(a, b, f"{where}[{index}]")) is not None:
                return problem
        return None
    if isinstance(expected, float) and isinstance(found, float):
        same = math.isclose(expected, found, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = expected == found and type(expected) is type(found)
    return None if same else f"{where}: {expected!r} != {found!r}"


def check_answers(servers: dict[str, Server], scenarios: list[Scenario]) -> list[str]:
    """The baselines must answer what the service answers, or the comparison is not fair."""
    notes = []
    for path, bodies in {s.path: s.bodies for s in scenarios}.items():
        answers = {}
        for name, server in servers.items():
            try:
                status, raw = request(server.url + path, first_body(bodies))
            except OSError as error:
                notes.append(f"{name} did not answer POST {path}: {error}")
                continue
            if status != 200:
                notes.append(f"{name} answered {status} to POST {path}: {raw[:300]!r}")
            else:
                answers[name] = json.loads(raw)
        for name in BASELINES:
            if "service" in answers and name in answers:
                problem = difference(answers["service"], answers[name])
                if problem:
                    notes.append(f"POST {path}: {name} answers differently from the service ({problem})")
    return notes


@contextlib.contextmanager
def running(server: Server, ready_path: str, body: bytes | None = None) -> Iterator[Server]:
    try:
        server.wait_until_answering(ready_path, body)
        yield server
    finally:
        server.stop()


def start(
    name: str,
    args: argparse.Namespace,
    logs: Path,
    *,
    workers: int | None = None,
    cwd: Path = REPO_ROOT,
    **settings: str,
) -> Server:
    workers = workers or args.workers
    if name.startswith("service"):
        production = {
            "SERVICE_MODELS": ",".join(MODELS),
            "SERVICE_MODEL_THREADS": str(args.model_threads),
            # Only how long a stop may take; an idle server has nothing to finish.
            "SERVICE_GRACEFUL_TIMEOUT": "5",
        }
        # "service-unfrozen": the same service without gc.freeze(), to show what it saves.
        config = UNFROZEN_CONF if name.startswith("service-unfrozen") else "gunicorn.conf.py"
        return start_service(
            name,
            args.store,
            logs,
            workers=workers,
            threads=args.threads,
            config=config,
            cwd=cwd,
            **{**production, **settings},
        )
    kind = name.split("-")[0]
    return start_baseline(
        name,
        BASELINES[kind],
        args.store,
        logs,
        workers=workers,
        threads=args.threads,
        model_threads=args.model_threads,
    )


def ready(server: Server, probe: Scenario) -> tuple[str, bytes | None]:
    if server.name.startswith("service"):
        return "/health", None
    return probe.path, first_body(probe.bodies)


def measure_memory(
    kind: str, workers: int, args: argparse.Namespace, logs: Path, load: list[Scenario]
) -> Memory:
    name = f"{kind}-memory-{workers}"
    server = start(name, args, logs, workers=workers)
    try:
        with running(server, *ready(server, load[0])):
            for scenario in load:
                # At least one connection per worker, so that every worker has served both models.
                connections = max(scenario.connections, workers)
                wrk.run(
                    server.url,
                    scenario.path,
                    scenario.bodies,
                    connections=connections,
                    seconds=MEMORY_LOAD_SECONDS,
                )
            time.sleep(0.5)
            return Memory(kind, workers, tuple(server.pss_kb()))
    except (ServerError, wrk.WrkError) as error:
        return Memory(kind, workers, error=str(error).splitlines()[0])


def settings_lines(args: argparse.Namespace) -> list[tuple[str, str]]:
    threads_env = args.model_threads
    return [
        (
            "wrk runs",
            f"{args.duration} s measured after {args.warmup} s warm-up, {args.runs} interleaved run(s); "
            f"-t min(connections, 2), --timeout {wrk.REQUEST_TIMEOUT}",
        ),
        (
            "Gunicorn (all three)",
            f"gthread, {args.workers} workers x {args.threads} threads, preload, keep-alive 5 s, "
            "no worker recycling",
        ),
        (
            "Service",
            f"gunicorn -c gunicorn.conf.py wsgi:app; SERVICE_MODELS={','.join(MODELS)}, "
            f"SERVICE_MODEL_THREADS={threads_env}; JSON access log, metrics and validation on",
        ),
        (
            "Baselines",
            "bench.bare_app (orjson, one predict_proba), bench.naive_app (Flask, predict + "
            f"predict_proba, jsonify); OMP/OPENBLAS/MKL_NUM_THREADS={threads_env}",
        ),
        (
            "Bodies",
            f"per model {SINGLE_BODIES} single rows and {BATCH_BODIES} batches of {BATCH_ROWS} rows from "
            f"sklearn.datasets (seed {SEED}), cycled by bench/post.lua",
        ),
        ("Store", str(args.store)),
    ]


def run(args: argparse.Namespace, work: Path) -> Report:
    wrk.wrk_binary()
    ensure_demo_models(args.store)
    if not args.quick:
        # A store of its own: the bench-only model never joins the models `make serve` serves.
        ensure_threads_model(work / THREADS_STORE)
    stored = {name: load(name, args.store) for name in MODELS}
    bodies = {name: write_bodies(name, stored[name].manifest, work) for name in MODELS}
    scenarios = build_scenarios(bodies, args.quick)

    say("timing the models alone")
    blocks, budget = (5, 0.5) if args.quick else (21, 3.0)
    timings = []
    for name in MODELS:
        for matrix in (bodies[name].single_rows[:1], bodies[name].batch_matrix):
            timings.append(
                time_model(
                    name,
                    stored[name].estimator,
                    matrix,
                    threads=args.model_threads,
                    blocks=blocks,
                    budget_seconds=budget,
                )
            )
    report = Report(header_lines(), settings_lines(args), scenarios, {}, timings)

    logs = work / "logs"
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in SERVERS:
            servers[name] = start(name, args, logs)
            stack.callback(servers[name].stop)
        for server in servers.values():
            server.wait_until_answering(*ready(server, scenarios[0]))
        say("servers up: " + ", ".join(f"{s.name} {s.url} (pid {s.proc.pid})" for s in servers.values()))
        report.notes += check_answers(servers, scenarios)

        report.series = interleave(servers, scenarios, args)

        if not args.quick:
            # Measured: stopped now, they hold no memory or CPU through the threads section.
            for server in servers.values():
                server.stop()
            mlp = load(MLP_NAME, work / THREADS_STORE)
            mlp_bodies = write_bodies(MLP_NAME, mlp.manifest, work)
            report.threads = run_threads(args, logs, mlp.estimator, mlp_bodies, stack)

    if not args.quick:
        report.memory = run_memory(args, logs, bodies)
    return report


def interleave(
    servers: dict[str, Server], scenarios: list[Scenario], args: argparse.Namespace
) -> dict[tuple[str, str], Series]:
    """For each run, for each scenario, each server in turn: a slow spell on the machine
    then lands on all three servers rather than on one."""
    found: dict[tuple[str, str], list[Sample]] = {(s.label, name): [] for s in scenarios for name in servers}
    for number in range(1, args.runs + 1):
        for scenario in scenarios:
            for name, server in servers.items():
                sample = measure(server, scenario, seconds=args.duration, warmup=args.warmup)
                found[(scenario.label, name)].append(sample)
                say(f"[run {number}/{args.runs}] {scenario.label:<28} {name:<8} {describe(sample)}")
    return {key: Series(samples) for key, samples in found.items()}


def run_memory(args: argparse.Namespace, logs: Path, bodies: dict[str, Any]) -> list[Memory]:
    load_scenarios = [
        Scenario("iris", 1, 8, bodies["iris"].single),
        Scenario("breast_cancer", BATCH_ROWS, 1, bodies["breast_cancer"].batch),
    ]
    found = []
    for kind in ("service", "service-unfrozen", "naive"):
        for workers in MEMORY_WORKERS:
            say(f"memory: {kind} with {workers} worker(s)")
            found.append(measure_memory(kind, workers, args, logs, load_scenarios))
    return found


def run_threads(
    args: argparse.Namespace, logs: Path, estimator: Any, bodies: ModelBodies, stack: contextlib.ExitStack
) -> ThreadsSection:
    """The sizing rule on a BLAS-bound model: one native thread per worker (workers x 1 = cores
    by default) against one per core in every worker (workers x cores threads sharing the cores)."""
    cores = os.cpu_count() or 1
    counts = tuple(dict.fromkeys((1, cores)))
    say("threads: timing the mlp alone")
    alone = []
    for count in counts:
        timing = time_model(
            MLP_NAME, estimator, bodies.batch_matrix, threads=count, blocks=21, budget_seconds=3
        )
        alone.append((count, timing.seconds_per_call))
    scenario = Scenario(MLP_NAME, BATCH_ROWS, THREADS_CONNECTIONS, bodies.batch)
    servers = {}
    for count in counts:
        servers[count] = start(
            f"service-threads-{count}",
            args,
            logs,
            SERVICE_MODEL_STORE=str(logs.parent / THREADS_STORE),
            SERVICE_MODELS=MLP_NAME,
            SERVICE_DEFAULT_MODEL=MLP_NAME,
            SERVICE_MODEL_THREADS=str(count),
        )
        stack.callback(servers[count].stop)
    for server in servers.values():
        server.wait_until_answering("/health")
        # A native pool's threads spin for a moment when a worker starts them: let that pass
        # (and every worker boot) before the first reading, or idle threads count as running.
        settle(server)
    master_threads = [server.master_threads() for server in servers.values()]
    samples: dict[int, list[Sample]] = {count: [] for count in counts}
    seen: dict[int, list[list[WorkerThreads]]] = {count: [] for count in counts}
    for number in range(1, args.runs + 1):
        for count, server in servers.items():
            before = server.worker_threads()
            sample = measure(server, scenario, seconds=args.duration, warmup=args.warmup)
            seen[count].append(threads_used(before, server.worker_threads()))
            samples[count].append(sample)
            shown = ", ".join(f"{w.os_threads} ({w.ran} ran)" for w in seen[count][-1])
            say(f"[threads {number}/{args.runs}] model threads {count:<3} {describe(sample)}  {shown}")
    for server in servers.values():
        server.stop()
    variants = [ThreadsVariant(count, Series(samples[count]), seen[count]) for count in counts]
    return ThreadsSection(
        scenario.label, cores, args.workers, args.threads, variants, alone, tuple(master_threads)
    )


def threads_used(
    before: dict[int, tuple[int, dict[int, int]]], after: dict[int, tuple[int, dict[int, int]]]
) -> list[WorkerThreads]:
    """Per worker, its OS threads and how many of them used CPU between the two readings:
    an idle native pool thread counts in the first figure but not in the second."""
    found = []
    for pid, (count, ticks) in sorted(after.items()):
        earlier = before.get(pid, (0, {}))[1]
        found.append(
            WorkerThreads(count, sum(1 for tid, used in ticks.items() if used > earlier.get(tid, 0)))
        )
    return found


def describe(sample: Sample) -> str:
    if sample.error:
        return "FAIL: " + sample.error
    text = (
        f"{sample.requests_per_second:9.1f} req/s  p50 {sample.p50_ms:7.1f} ms  "
        f"cpu {sample.cpu_us_per_request or 0:8.0f} µs/req"
    )
    return text + (f"  FAIL: {sample.faults} non-2xx/errors" if not sample.ok else "")


def write_report(text: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ".md")
    path.write_text(text, encoding="utf-8")
    (out / "latest.md").write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # On SIGTERM, unwind like Ctrl-C so that every server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
            report = run(args, Path(scratch))
    except (BenchError, BodyError, ServerError, wrk.WrkError) as error:
        say(f"benchmark aborted: {error}")
        return 2
    text = render(report)
    path = write_report(text, args.out)
    print(text, end="")
    say(f"report written to {path} and {args.out / 'latest.md'}")
    if report.failed:
        say("some scenarios had non-2xx answers or socket errors: see FAIL in the report")
        return 1
    return 0
