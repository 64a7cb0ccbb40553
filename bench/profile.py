"""Where a worker's time goes under load: a sampling profile of one service worker, summed by layer.

python -m bench.profile [--scenario single --scenario batch] [--seconds 10] [--rate 100] [--python-only]

Starts the service (one worker, the benchmark's settings, scikit-learn runtime),
drives it with wrk on each scenario (``single``: iris single rows at 8
connections; ``batch``: 1,000-row iris batches at 4; ``compact``: the same with
``?format=compact``), and after a warm-up records the worker with
``py-spy record --gil --native --format raw`` for ``--seconds``. Only samples in
which the worker held the GIL count: they are the time that decides how many
requests a worker can serve. Each sample goes to one bucket (see ``bucket``) and
its innermost function gets an "own" sample; the summary prints both.
``--python-only`` samples without pausing the worker but sees no C frames.
py-spy attaches by pid, which needs root or ptrace permission.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from bench.bodies import BATCH_ROWS, Scenario, write_bodies
from bench.options import positive
from bench.procs import Server, running, start
from bench.runner import ensure_demo_models
from bench.store import MODELS, load
from service.config import Settings

WARMUP_SECONDS = 3
TOP_FUNCTIONS = 15
SPY_GRACE_SECONDS = 60

# (bucket, path fragments). The first four take a sample wherever their frames are in its
# stack: a log record's JSON is the log's cost, a check inside predict_proba is the check's.
LOGGING = "logging (gunicorn glogging, logging, JSON log formatter)"
BY_ANY_FRAME = (
    (LOGGING, ("gunicorn/glogging.py", "logging/", "pythonjsonlogger/", "service/logs.py")),
    ("prometheus_client", ("prometheus_client/",)),
    (
        "scikit-learn input checks and config",
        (
            "sklearn/utils/validation.py",
            "sklearn/_config.py",
            "sklearn/utils/_param_validation.py",
            "sklearn/utils/_array_api.py",
            "sklearn/utils/_set_output.py",
        ),
    ),
    (
        "model compute (scikit-learn, joblib, scipy, onnxruntime)",
        ("sklearn/", "joblib/", "scipy/", "onnxruntime/"),
    ),
    ("JSON in and out (orjson, json)", ("orjson", "json/")),
)
# The rest: the innermost frame that is one of these decides, so that werkzeug called
# from a view is werkzeug's, and marshmallow is the service's validation.
BY_INNERMOST = (
    ("service view and validation", ("service/", "marshmallow/")),
    ("Flask and werkzeug", ("flask/", "werkzeug/")),
    ("gunicorn HTTP and worker", ("gunicorn/",)),
)
OTHER = "other"
# The access record written from the app wraps the whole request: its own time (its
# JSON included) is the log's, but what runs inside it (the app) is not.
APP_LOGGING = "service/access_log.py"
# Interpreter and C library frames: an "own" sample goes to the function they run for.
INTERPRETER = ("libpython", "libc.so", "libm.so", "ld-linux", "libpthread", "<frozen ", "<string>")


@dataclass(frozen=True)
class Profile:
    label: str
    requests_per_second: float
    samples: int  # GIL-holding samples
    possible: int  # rate x seconds: what a worker that held the GIL throughout would give
    buckets: Counter[str]
    own: Counter[str]


def frames(line: str) -> tuple[list[str], int]:
    """A py-spy raw line, ``outer (file:line);...;inner (file:line) COUNT``: frames root first."""
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2]


def _innermost(files: list[str]) -> tuple[str, str] | None:
    """(bucket, file) of the innermost frame that is the service's, Flask's or Gunicorn's."""
    for file in reversed(files):
        for name, fragments in BY_INNERMOST:
            if any(fragment in file for fragment in fragments):
                return name, file
    return None


def bucket(stack: list[str]) -> str:
    files = [_file(frame) for frame in stack]
    innermost = _innermost(files)
    if innermost is not None and APP_LOGGING in innermost[1]:
        return LOGGING
    for name, fragments in BY_ANY_FRAME:
        if any(fragment in file for file in files for fragment in fragments):
            return name
    return OTHER if innermost is None else innermost[0]


def own_function(stack: list[str]) -> str:
    """The innermost frame that is not the interpreter's or the C library's, without its line;
    native code without symbols (orjson's) by its library alone."""
    for frame in reversed(stack):
        if not any(part in _file(frame) for part in INTERPRETER):
            name, _, where = frame.rpartition(" (")
            where = where.rsplit(":", 1)[0].rstrip(")")
            return f"native code ({where})" if name.startswith("0x") else f"{name} ({where})"
    return stack[-1]


def summarise(label: str, raw: str, requests_per_second: float, possible: int) -> Profile:
    buckets: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, count = frames(line)
        buckets[bucket(stack)] += count
        own[own_function(stack)] += count
    return Profile(label, requests_per_second, sum(buckets.values()), possible, buckets, own)


def record(server: Server, scenario: Scenario, path: str, label: str, args: argparse.Namespace) -> Profile:
    """Load the server for warm-up + profile seconds and record its (only) worker meanwhile."""
    worker = server.worker_pids()[0]
    loaded: dict[str, wrk.WrkResult] = {}
    load_seconds = WARMUP_SECONDS + args.seconds + 1

    def drive() -> None:
        loaded["result"] = wrk.run(
            server.base_url, path, scenario.bodies, connections=scenario.connections, seconds=load_seconds
        )

    driver = threading.Thread(target=drive, name="wrk")
    driver.start()
    time.sleep(WARMUP_SECONDS)
    out = args.work / f"{label.replace(' ', '-')}.txt"
    argv = [args.py_spy, "record", "--pid", str(worker), "--gil", "--rate", str(args.rate)]
    # Native stacks (orjson's and numpy's C code) need the worker paused at each sample.
    argv += ["--nonblocking"] if args.python_only else ["--native"]
    argv += ["--format", "raw", "--duration", str(args.seconds), "--output", str(out)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=args.seconds + SPY_GRACE_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    driver.join()
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    result = loaded.get("result")
    rate = result.requests_per_second if result else 0.0
    return summarise(label, out.read_text(), rate, args.rate * args.seconds)


def show(profile: Profile) -> str:
    lines = [
        f"## {profile.label}",
        "",
        f"{profile.requests_per_second:.0f} req/s under the profiler; {profile.samples} GIL-holding samples "
        f"({profile.samples / profile.possible:.0%} of the wall time)"
        if profile.possible
        else "",
        "",
        "| Bucket | GIL samples | Share |",
        "|---|---|---|",
    ]
    total = profile.samples or 1
    for name, count in profile.buckets.most_common():
        lines.append(f"| {name} | {count} | {count / total:.1%} |")
    lines += [
        "",
        f"Top {TOP_FUNCTIONS} functions by own samples:",
        "",
        "| Function | Own | Share |",
        "|---|---|---|",
    ]
    for name, count in profile.own.most_common(TOP_FUNCTIONS):
        lines.append(f"| `{name}` | {count} | {count / total:.1%} |")
    return "\n".join(lines) + "\n"


def scenarios(bodies: dict[str, object]) -> dict[str, tuple[Scenario, str]]:
    iris = bodies["iris"]
    single = Scenario("iris", 1, 8, iris.single)
    batch = Scenario("iris", BATCH_ROWS, 4, iris.batch)
    return {
        "single": (single, single.path),
        "batch": (batch, batch.path),
        "compact": (batch, batch.path + "?format=compact"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=("single", "batch", "compact"),
        help="single (iris @8), batch (iris 1,000 rows @4), compact (the same, ?format=compact); "
        "repeat for several (single and batch)",
    )
    parser.add_argument("--seconds", type=positive, default=10, help="seconds recorded per scenario (10)")
    parser.add_argument("--rate", type=positive, default=100, help="samples per second (100)")
    parser.add_argument(
        "--python-only",
        action="store_true",
        help="Python frames only, sampled without pausing the worker (C code such as orjson's "
        "is then charged to the Python function that called it)",
    )
    parser.add_argument(
        "--store", type=Path, help="model store (the demo models are trained into it if empty)"
    )
    args = parser.parse_args(argv)
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(args.py_spy).exists():
        parser.error("py-spy is not installed (pip install -r requirements-dev.txt)")
    defaults = Settings()
    args.threads, args.model_threads, args.workers = defaults.threads, defaults.model_threads, 1
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as raw:
        args.work = Path(raw)
        args.store = (args.store or args.work / "store").resolve()
        args.store.mkdir(parents=True, exist_ok=True)
        ensure_demo_models(args.store)
        bodies = {name: write_bodies(name, load(name, args.store).manifest, args.work) for name in MODELS}
        chosen = scenarios(bodies)
        server = start("service", args, args.work / "logs")
        with running(server, "/ready"):
            for name in args.scenario or ["single", "batch"]:
                scenario, path = chosen[name]
                label = f"{scenario.label}{' compact' if name == 'compact' else ''}"
                print(show(record(server, scenario, path, label, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
