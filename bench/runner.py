"""The benchmark run: the stores, the servers, the measurements in order, and the report file.

See bench/README.md. The command line is in options.py, what is measured in plan.py,
the servers in procs.py, the measurements in measure.py, the answer check in
checks.py, the goals in goals.py and the markdown in report.py. Every server runs
on a free 127.0.0.1 port, is stopped by its own pid whatever happens, and every
subprocess has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import h2load, wrk
from bench.bodies import BodyError, Scenario, write_bodies
from bench.checks import check_answers
from bench.machine import header_lines
from bench.measure import THREADS_STORE, interleave, run_memory, run_threads, say
from bench.mlp import NAME as MLP_NAME
from bench.mlp import ensure_mlp
from bench.model_alone import time_model
from bench.options import parse_args, settings_lines
from bench.plan import Planned, build_plan, grpc_servers, servers_of
from bench.procs import Server, ready, start
from bench.report import Report, render
from bench.store import MODELS, compile_onnx, copy_models, load
from local_gunicorn import REPO_ROOT, ServerError

TRAIN_TIMEOUT = 600
ONNX_SERVER = "service-onnx"


class BenchError(RuntimeError):
    pass


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


def prepare_store(
    args: argparse.Namespace, work: Path, plan: list[Planned]
) -> tuple[dict[str, str], list[str]]:
    """Point the run at a copy of the demo models, compiled to ONNX when the plan serves ONNX.
    The servers that cannot be measured (ONNX, when the forest did not compile) and why; notes
    for the models that did not compile."""
    args.store = copy_models(args.store, work / "store")
    if not any(c.server == ONNX_SERVER for p in plan for c in p.contenders):
        return {}, []
    say("compiling the models to ONNX (flask --app wsgi models compile)")
    failed = compile_onnx(args.store)
    notes = [f"{name} not compiled to ONNX: {why}" for name, why in failed.items()]
    if failed:
        return {ONNX_SERVER: f"{', '.join(failed)} not compiled to ONNX"}, notes
    return {}, notes


def start_servers(
    names: list[str],
    args: argparse.Namespace,
    logs: Path,
    probe: Scenario,
    stack: contextlib.ExitStack,
    grpc: set[str] | None = None,
) -> tuple[dict[str, Server], dict[str, str]]:
    """Every server of the plan, up and ready, those named in ``grpc`` serving gRPC too; the ONNX
    one may fail (its rows are then n/a)."""
    servers = {}
    for name in names:
        servers[name] = start(name, args, logs, grpc=name in (grpc or set()))
        stack.callback(servers[name].stop)
    unavailable = {}
    for name, server in list(servers.items()):
        try:
            server.wait_until_answering(*ready(server, probe))
        except ServerError as error:
            if name != ONNX_SERVER:
                raise
            server.stop()
            del servers[name]
            unavailable[name] = "not ready: " + " ".join(str(error).split())[:300]
    return servers, unavailable


def describe_server(server: Server) -> str:
    grpc = f" and gRPC {server.grpc_url}" if server.grpc_port is not None else ""
    return f"{server.name} {server.base_url}{grpc} (pid {server.proc.pid})"


def run(args: argparse.Namespace, work: Path) -> Report:
    wrk.wrk_binary()
    h2load.h2load_binary()
    ensure_demo_models(args.store)
    if not args.quick:
        # A store of its own: the bench-only model never joins the models `make serve` serves.
        ensure_threads_model(work / THREADS_STORE)
    stored = {name: load(name, args.store) for name in MODELS}
    bodies = {name: write_bodies(name, stored[name].manifest, work) for name in MODELS}
    plan = build_plan(bodies, args.quick)
    unavailable, compile_notes = prepare_store(args, work, plan)

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
    report = Report(header_lines(), settings_lines(args), plan, {}, timings, unavailable, notes=compile_notes)

    logs = work / "logs"
    with contextlib.ExitStack() as stack:
        names = [name for name in servers_of(plan) if name not in unavailable]
        servers, failed = start_servers(names, args, logs, plan[0].scenario, stack, grpc_servers(plan))
        report.unavailable.update(failed)
        say("servers up: " + ", ".join(describe_server(server) for server in servers.values()))
        estimators = {name: stored[name].estimator for name in MODELS}
        report.notes += check_answers(servers, plan, estimators)

        report.series = interleave(servers, plan, args)

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
    except (BenchError, BodyError, ServerError, wrk.WrkError, h2load.H2loadError) as error:
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
