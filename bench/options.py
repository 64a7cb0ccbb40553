"""The benchmark's command line, and the settings table it gives the report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench import wrk
from bench.bodies import BATCH_BODIES, BATCH_ROWS, SEED, SINGLE_BODIES
from bench.store import MODELS
from local_gunicorn import REPO_ROOT
from service.config import Settings


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
        description="Benchmark the service against a tutorial Flask app and a bare WSGI app.",
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
        "--quick",
        action="store_true",
        help="smoke run: 1 run of 1 s, three scenarios, no memory or threads",
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
    args.source_store = args.store  # the run serves a copy (bench.store.copy_models)
    args.model_threads = defaults.model_threads
    return args


def settings_lines(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The report's settings table: what every server ran with, and what wrk sent."""
    threads_env = args.model_threads
    return [
        (
            "wrk runs",
            f"{args.duration} s measured after {args.warmup} s warm-up, {args.runs} interleaved run(s); "
            f"-t min(connections, 2), --timeout {wrk.REQUEST_TIMEOUT}",
        ),
        (
            "h2load runs (gRPC)",
            "the same durations and interleaving; -c connections -m 1 -t min(connections, 2) -D SECONDS, "
            "one body (-d), headers content-type: application/grpc and te: trailers; req/s, p50 and "
            "p99 from its --log-file",
        ),
        (
            "Service",
            f"gunicorn -c gunicorn.conf.py wsgi:app: gthread, {args.workers} workers x {args.threads} "
            "threads, "
            f"preload, no worker recycling; SERVICE_MODELS={','.join(MODELS)}, "
            f"SERVICE_MODEL_THREADS={threads_env}, SERVICE_RUNTIME=sklearn; JSON access log, metrics, "
            "request ids and validation on",
        ),
        (
            "Service variants",
            "service compact: the same server, batch routes with ?format=compact; service batching off: "
            "SERVICE_BATCHING=off; service onnx: SERVICE_RUNTIME=onnx, the models compiled by "
            "`flask --app wsgi models compile` (service onnx compact: its batch routes with ?format=compact)",
        ),
        (
            "Open Inference Protocol",
            "the service's server, which also serves gRPC (SERVICE_GRPC_PORT): service v2 json: POST "
            "/v2/models/NAME/infer, one FP64 [1, n] tensor; service v2 binary: the same with the binary "
            "tensor extension, every output as bytes (bench/post_binary.lua); service grpc: "
            "GRPCInferenceService/ModelInfer with raw_input_contents, loaded by h2load",
        ),
        (
            "tutorial",
            f"bench.tutorial_app (Flask, request.get_json(), predict + predict_proba, jsonify): "
            f"gunicorn -w {args.workers} --preload, sync workers (a connection per request)",
        ),
        (
            "bare arrays",
            f"bench.bare_app (orjson, one predict_proba, arrays out): gthread, {args.workers} workers x "
            f"{args.threads} threads, preload, keep-alive 5 s (bench/gunicorn_baseline.conf.py)",
        ),
        (
            "flask arrays",
            "bench.flask_arrays_app: the bare app's work in one Flask view, nothing else; the bare app's "
            "server settings",
        ),
        ("Baselines' native pools", f"OMP/OPENBLAS/MKL_NUM_THREADS={threads_env}"),
        (
            "Bodies",
            f"per model {SINGLE_BODIES} single rows and {BATCH_BODIES} batches of {BATCH_ROWS} rows from "
            f"sklearn.datasets (seed {SEED}), cycled by bench/post.lua (post_binary.lua for the binary "
            "extension's); h2load sends the first single row's gRPC message every time",
        ),
        ("Store", f"{args.source_store} (its demo models copied into the run's temporary folder)"),
    ]
