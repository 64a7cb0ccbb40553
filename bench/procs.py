"""Starting, watching and stopping the servers under test: one Gunicorn process tree each.

Every server is a child of this process, on a free loopback port, stopped by its
own pid. CPU time and memory are read from /proc for the master and its workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_CONF = REPO_ROOT / "bench" / "gunicorn_baseline.conf.py"

START_TIMEOUT = 90.0  # loading scikit-learn and the models on a busy 2-core machine is slow
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Idle: under a tenth of one core for two quarter-second intervals in a row (CPU time
# comes in clock ticks, 10 ms at 100 Hz, so shorter intervals would read as noise).
IDLE_INTERVAL = 0.25
IDLE_SHARE = 0.1
IDLE_TIMEOUT = 30.0

# A direct opener: the servers are on loopback, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """A server did not start or died; the message carries its last output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: bytes | None = None, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request to a loopback server: (status, body). POST when ``body`` is given."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers, method="GET" if body is None else "POST")
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: Any = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 40) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(lines[-tail:])

    def trim_log(self, limit: int = 64 * 1024 * 1024) -> None:
        """Empty the log once it is large: the service logs one line per request, and a long
        run would otherwise fill the temp disk. Opened for appending, so the writer follows."""
        try:
            if self.log_path.stat().st_size > limit:
                os.truncate(self.log_path, 0)
        except OSError:
            pass

    def wait_until_answering(self, path: str, body: bytes | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} before serving:\n{self.output()}"
                )
            try:
                status, answer = request(self.url + path, body, timeout=5)
            except OSError as error:
                last = repr(error)
            else:
                if status == 200:
                    return
                last = f"{status} {answer[:300]!r}"
            time.sleep(0.2)
        raise ServerError(
            f"{self.name} did not answer {path} in {START_TIMEOUT:.0f}s ({last}):\n{self.output()}"
        )

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

    def pids(self) -> dict[int, str]:
        """The live processes of this server: the master and every descendant (the workers)."""
        if not self.alive():
            return {}
        children: dict[int, list[int]] = {}
        for pid, parent in _parents().items():
            children.setdefault(parent, []).append(pid)
        found = {self.proc.pid: "master"}
        queue = [self.proc.pid]
        while queue:
            for child in children.get(queue.pop(), []):
                found[child] = "worker"
                queue.append(child)
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the whole process tree (all threads)."""
        total = 0
        for pid in self.pids():
            fields = _stat_fields(pid)
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
                fields = _stat_fields(pid, tid)
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

    def stop(self) -> None:
        """SIGTERM the master by its pid, SIGKILL it if it does not exit in time."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            if self._log is not None:
                self._log.close()


def _thread_count(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")), 0)


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    return parents


def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """/proc/PID/stat (or one thread's /proc/PID/task/TID/stat) from field 3 (state) on; None
    if it is gone. The command name (field 2) may hold spaces and parentheses, so the split is
    after its last ")"."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the service's settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Each service makes and removes its own metrics directory; a shared one
        # would be emptied by the next server to start.
        if not key.startswith("SERVICE_") and key not in {"HOST", "PORT", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: have the kernel SIGTERM it if the runner dies without
    stopping it (SIGKILL, a crash), so that no server outlives its benchmark."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _spawn(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, port: int, cwd: Path = REPO_ROOT
) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    # A file, not a pipe: nobody reads a pipe during the run, and a full one would stall the server.
    log = log_path.open("ab")
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    return Server(name, proc, port, log_path, log)


def start_service(
    name: str,
    store: Path,
    log_dir: Path,
    *,
    workers: int,
    threads: int,
    config: str = "gunicorn.conf.py",
    cwd: Path = REPO_ROOT,
    **settings: str,
) -> Server:
    """The real service, exactly as deployed: ``gunicorn -c gunicorn.conf.py wsgi:app``
    (``config``: another settings file, for the memory comparison; ``cwd``: another
    checkout of the service, to compare two versions)."""
    port = free_port()
    env = _clean_env(
        {
            "SERVICE_MODEL_STORE": str(store),
            "SERVICE_WORKERS": str(workers),
            "SERVICE_THREADS": str(threads),
            "SERVICE_MAX_REQUESTS": "0",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            **settings,
        }
    )
    argv = [sys.executable, "-m", "gunicorn", "-c", config, "wsgi:app"]
    return _spawn(name, argv, env, log_dir, port, cwd)


def start_baseline(
    name: str, module: str, store: Path, log_dir: Path, *, workers: int, threads: int, model_threads: int
) -> Server:
    """A baseline app under the same Gunicorn settings as the service."""
    port = free_port()
    threads_env = str(model_threads)
    env = _clean_env(
        {
            "SERVICE_MODEL_STORE": str(store),
            # The service holds each worker's native thread pools (BLAS, OpenMP) to
            # SERVICE_MODEL_THREADS; the baselines get the same through the environment.
            "OMP_NUM_THREADS": threads_env,
            "OPENBLAS_NUM_THREADS": threads_env,
            "MKL_NUM_THREADS": threads_env,
        }
    )
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
        f"{module}:app",
    ]
    return _spawn(name, argv, env, log_dir, port)
