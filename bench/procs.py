"""The benchmark's servers: the service and the baselines, and the CPU, memory and threads they use.

Starting one on a free loopback port, waiting for it and stopping it by its own
pid is ``local_gunicorn``'s, shared with the tests. This module adds the bench's
Gunicorn settings (the same for the service and the baselines) and the readings
of the process tree the report shows, from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import local_gunicorn
from bench.bodies import Scenario, first_body
from bench.plan import SERVICE_SETTINGS
from bench.store import MODELS
from local_gunicorn import REPO_ROOT, clean_env, free_port, request, stat_fields, status_value

BASELINE_CONF = REPO_ROOT / "bench" / "gunicorn_baseline.conf.py"
UNFROZEN_CONF = str(REPO_ROOT / "bench" / "gunicorn_unfrozen.conf.py")
BARE_APP = "bench.bare_app:app"
FLASK_ARRAYS_APP = "bench.flask_arrays_app:app"
TUTORIAL_APP = "bench.tutorial_app:app"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Idle: under a tenth of one core for two quarter-second intervals in a row (CPU time
# comes in clock ticks, 10 ms at 100 Hz, so shorter intervals would read as noise).
IDLE_INTERVAL = 0.25
IDLE_SHARE = 0.1
IDLE_TIMEOUT = 30.0
# The service's count of gRPC calls by method and status code (see service/api/metrics.py).
GRPC_CALLS = "sklearn_service_grpc_requests"


class Server(local_gunicorn.Server):
    """A server under measurement: its whole process tree's CPU time, memory and threads."""

    grpc_port: int | None = None  # set when the service also serves gRPC (SERVICE_GRPC_PORT)

    @property
    def grpc_address(self) -> str:
        if self.grpc_port is None:
            raise ValueError(f"{self.name} does not serve gRPC")
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def grpc_url(self) -> str:
        return f"http://{self.grpc_address}"

    def grpc_failures(self, method: str = "ModelInfer") -> int:
        """The ``method`` calls every worker has answered with another status than OK so far,
        from the service's /metrics: h2load, which loads gRPC, sees HTTP statuses only."""
        status, text = request(self.url("/metrics"))
        if status != 200:
            raise ValueError(f"{self.name} answered {status} to GET /metrics")
        failed = 0
        for family in text_string_to_metric_families(text.decode()):
            if family.name != GRPC_CALLS:
                continue
            for sample in family.samples:
                if (
                    sample.name.endswith("_total")
                    and sample.labels.get("method") == method
                    and sample.labels.get("code") != "OK"
                ):
                    failed += int(sample.value)
        return failed

    def trim_log(self, limit: int = 64 * 1024 * 1024) -> None:
        """Empty the log once it is large: the service logs one line per request, and a long
        run would otherwise fill the temp disk. The server appends, so it follows."""
        try:
            if self.stdout_path.stat().st_size > limit:
                os.truncate(self.stdout_path, 0)
        except OSError:
            pass

    def wait_idle(self, timeout: float = IDLE_TIMEOUT) -> bool:
        """Wait until the process tree has used (almost) no CPU for two intervals in a row;
        False if it is still busy after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last, quiet = self.cpu_seconds(), 0
        while quiet < 2 and time.monotonic() < deadline and self.alive():
            time.sleep(IDLE_INTERVAL)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last <= IDLE_INTERVAL * IDLE_SHARE else 0
            last = now
        return quiet >= 2

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the whole process tree (all threads)."""
        total = 0
        for pid in self.pids():
            fields = stat_fields(pid)
            if fields is not None:
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    def master_threads(self) -> int:
        """The master's OS threads: 1 means no native pool was started before the fork."""
        return _thread_count(self.proc.pid)

    def worker_threads(self) -> dict[int, tuple[int, dict[int, int]]]:
        """Per worker pid: its OS thread count (``Threads:`` in /proc/PID/status) and the CPU
        clock ticks each of its threads has used so far (/proc/PID/task/TID/stat)."""
        found = {}
        for pid, role in self.pids().items():
            if role != "worker":
                continue
            try:
                tids = [int(entry) for entry in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            count = _thread_count(pid)
            ticks = {}
            for tid in tids:
                # Not /proc/TID/stat: that one reads the whole process's times.
                fields = stat_fields(pid, tid)
                if fields is not None:
                    ticks[tid] = int(fields[11]) + int(fields[12])
            found[pid] = (count, ticks)
        return found

    def pss_kb(self) -> list[tuple[int, str, int]]:
        """(pid, role, PSS in kB) per process: shared pages are split between their users,
        so the sum is what the server really costs the machine."""
        found = []
        for pid, role in sorted(self.pids().items()):
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("Pss:"):
                    found.append((pid, role, int(line.split()[1])))
                    break
        return found


def _thread_count(pid: int) -> int:
    try:
        return status_value(pid, "Threads")
    except (OSError, LookupError):  # gone meanwhile
        return 0


def start_service(
    name: str,
    store: Path,
    log_dir: Path,
    *,
    workers: int,
    threads: int,
    config: str = local_gunicorn.SERVICE_CONFIG,
    cwd: Path = REPO_ROOT,
    **settings: str,
) -> Server:
    """The real service, exactly as deployed: ``gunicorn -c gunicorn.conf.py wsgi:app``
    (``config``: another settings file, for the memory comparison; ``cwd``: another
    checkout of the service, to compare two versions), its workers never recycled."""
    return Server.start_service(
        store,
        log_dir,
        name=name,
        config=config,
        cwd=cwd,
        merge_output=True,
        SERVICE_WORKERS=str(workers),
        SERVICE_THREADS=str(threads),
        SERVICE_MAX_REQUESTS="0",
        **settings,
    )


def _baseline_env(store: Path, model_threads: int) -> dict[str, str]:
    threads_env = str(model_threads)
    return clean_env(
        {
            "SERVICE_MODEL_STORE": str(store),
            "PYTHONPATH": str(REPO_ROOT),
            # The service holds each worker's native thread pools (BLAS, OpenMP) to
            # SERVICE_MODEL_THREADS; the baselines get the same through the environment.
            "OMP_NUM_THREADS": threads_env,
            "OPENBLAS_NUM_THREADS": threads_env,
            "MKL_NUM_THREADS": threads_env,
        }
    )


def start_bare(
    name: str,
    store: Path,
    log_dir: Path,
    *,
    workers: int,
    threads: int,
    model_threads: int,
    app: str = BARE_APP,
) -> Server:
    """The bare app (or ``app``) under the service's transport settings (gthread, keep-alive):
    only the app differs."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(BASELINE_CONF),
        "--worker-class",
        "gthread",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--preload",
        "--bind",
        f"127.0.0.1:{port}",
        app,
    ]
    return Server.start(
        name, argv, _baseline_env(store, model_threads), log_dir, port=port, merge_output=True
    )


def start_tutorial(name: str, store: Path, log_dir: Path, *, workers: int, model_threads: int) -> Server:
    """The tutorial app as tutorials serve it: ``gunicorn -w N --preload``, Gunicorn's default sync
    workers and settings. Started from the log directory, where no gunicorn.conf.py is found to
    add the service's settings; no control socket, whose one path per user several servers share."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        str(workers),
        "--preload",
        "--no-control-socket",
        "--bind",
        f"127.0.0.1:{port}",
        TUTORIAL_APP,
    ]
    env = _baseline_env(store, model_threads)
    return Server.start(name, argv, env, log_dir, port=port, cwd=log_dir, merge_output=True)


def start(
    name: str,
    args: argparse.Namespace,
    logs: Path,
    *,
    workers: int | None = None,
    cwd: Path = REPO_ROOT,
    grpc: bool = False,
    **settings: str,
) -> Server:
    """The server a name stands for ("service...", "bare...", "tutorial..."), with the run's settings;
    ``grpc``: a service serves gRPC too, on a free port of its own (``Server.grpc_port``).

    A service's variant (batching off, ONNX) comes from ``SERVICE_SETTINGS`` by its exact
    name; any other service name (the memory and threads sections') runs scikit-learn."""
    workers = workers or args.workers
    if grpc and not name.startswith("service"):
        raise ValueError(f"only the service serves gRPC, not {name!r}")
    if name.startswith("service"):
        grpc_port = free_port() if grpc else None
        if grpc_port is not None:
            settings = {**settings, "SERVICE_GRPC_PORT": str(grpc_port)}
        production = {
            "SERVICE_MODELS": ",".join(MODELS),
            "SERVICE_MODEL_THREADS": str(args.model_threads),
            # Only how long a stop may take; an idle server has nothing to finish.
            "SERVICE_GRACEFUL_TIMEOUT": "5",
            **SERVICE_SETTINGS.get(name, SERVICE_SETTINGS["service"]),
        }
        # "service-unfrozen": the same service without gc.freeze(), to show what it saves.
        config = UNFROZEN_CONF if name.startswith("service-unfrozen") else local_gunicorn.SERVICE_CONFIG
        server = start_service(
            name,
            args.store,
            logs,
            workers=workers,
            threads=args.threads,
            config=config,
            cwd=cwd,
            **{**production, **settings},
        )
        server.grpc_port = grpc_port
        return server
    if name.startswith("tutorial"):
        return start_tutorial(name, args.store, logs, workers=workers, model_threads=args.model_threads)
    if name.startswith(("bare", "flask-arrays")):
        return start_bare(
            name,
            args.store,
            logs,
            workers=workers,
            threads=args.threads,
            model_threads=args.model_threads,
            app=FLASK_ARRAYS_APP if name.startswith("flask-arrays") else BARE_APP,
        )
    raise ValueError(f"no server is called {name!r}")


def ready(server: Server, probe: Scenario) -> tuple[str, bytes | None]:
    """What shows that a server is up: the service's /ready, or a baseline's first answer."""
    if server.name.startswith("service"):
        return "/ready", None
    return probe.path, first_body(probe.bodies)


@contextlib.contextmanager
def running(server: Server, ready_path: str, body: bytes | None = None) -> Iterator[Server]:
    try:
        server.wait_until_answering(ready_path, body)
        yield server
    finally:
        server.stop()
