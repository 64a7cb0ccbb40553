"""Gunicorn on a free loopback port, as a child of this process: the runner the tests and the benchmark share.

Both start the real server the same way, and neither may leave one behind or stop
someone else's (the machine is shared): each server is a child process bound to
127.0.0.1, its output goes to files, it is stopped by its own pid (SIGTERM, then
SIGKILL), and the kernel stops it if this process dies first. Its workers are found
through /proc, from the master's pid down, never by name.

Standard library only: ``make bench`` installs the service's runtime requirements,
not pytest or requests. What pytest adds (failing a test with the server's output,
reading its JSON logs) is in tests/servers.py; the benchmark's CPU, memory and thread
readings are in bench/procs.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent
SERVICE_CONFIG = "gunicorn.conf.py"

START_TIMEOUT = 90.0  # loading scikit-learn and the models on a busy 2-core machine is slow
STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 30.0
POLL_INTERVAL = 0.1  # between readiness probes

# A direct opener: the servers are on loopback, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Looked up now, in the parent: between fork and exec the child should run as little as
# possible, and a dlopen() there could wait forever on a loader lock that another thread
# of the parent held at the moment of the fork.
PR_SET_PDEATHSIG = 1
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: servers are still stopped by pid, just not by the kernel
    _PRCTL = None


class ServerError(RuntimeError):
    """A server did not start, or died; the message carries its last output."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the service's settings, then ``extra``.

    A server runs with the settings it is given, not with whatever the shell that
    started the tests or the benchmark exported. PROMETHEUS_MULTIPROC_DIR goes too:
    each server makes and removes its own metrics directory, and a shared one would
    be emptied by the next server to start.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SERVICE_") and key not in {"HOST", "PORT", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update(extra)
    return env


def request(url: str, body: bytes | None = None, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request to a loopback server: (status, body). POST when ``body`` is given."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers, method="GET" if body is None else "POST")
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- Processes, from /proc ------------------------------------------------------------


def stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """/proc/PID/stat (or one thread's /proc/PID/task/TID/stat) from field 3 (state) on; None
    if it is gone. The command name (field 2) may hold spaces and parentheses, so the split is
    after its last ")"."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def parent_pid(pid: int) -> int:
    """The parent of a live process."""
    fields = stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[1])


def _parents() -> dict[int, int]:
    """Every live process's parent, by pid (a process that ends meanwhile is left out)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
    return parents


def status_value(pid: int, field: str) -> int:
    """The number on the ``field:`` line of /proc/PID/status (kB for the Vm* fields)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def peak_rss(pid: int) -> int:
    """VmHWM, the peak resident set size of a process, in bytes."""
    return status_value(pid, "VmHWM") * 1024


def rss(pid: int) -> int:
    """VmRSS, the resident set size of a process now, in bytes."""
    return status_value(pid, "VmRSS") * 1024


# --- A server ---------------------------------------------------------------------------


def die_with_parent() -> None:
    """Runs in the child before exec: have the kernel SIGTERM it if its parent dies without
    stopping it (SIGKILL, a crash), so that no server outlives the tests or the benchmark.
    The signal comes when the parent *thread* ends: servers are started from the main thread."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _open_log(path: Path) -> int:
    # O_APPEND: every write lands at the end of the file as it is now, so a long log can be
    # emptied while the server runs (bench/procs.py does) without leaving a hole.
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@dataclass
class Server:
    """One Gunicorn master started by this process, and the files its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path  # the same file as stdout_path when the two streams were merged

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        logs: Path,
        *,
        port: int,
        cwd: Path = REPO_ROOT,
        merge_output: bool = False,
    ) -> Self:
        """Start ``argv``, which must serve on 127.0.0.1:``port``; does not wait for it.

        Its output goes to files in ``logs`` (``NAME.log``, or ``NAME.stdout.log`` and
        ``NAME.stderr.log``), not to pipes: nobody reads a pipe while the server runs, and a
        full one would stall it.
        """
        logs.mkdir(parents=True, exist_ok=True)
        if merge_output:
            stdout_path = stderr_path = logs / f"{name}.log"
        else:
            stdout_path, stderr_path = logs / f"{name}.stdout.log", logs / f"{name}.stderr.log"
        with contextlib.ExitStack() as opened:
            stdout = _open_log(stdout_path)
            opened.callback(os.close, stdout)
            stderr = subprocess.STDOUT
            if not merge_output:
                stderr = _open_log(stderr_path)
                opened.callback(os.close, stderr)
            # The child writes through its own copies of the descriptors; this process's
            # copies are closed on the way out, so a server holds nothing open here.
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        return cls(name, proc, port, stdout_path, stderr_path)

    @classmethod
    def start_service(
        cls,
        store: Path,
        logs: Path,
        *,
        name: str = "gunicorn",
        config: str = SERVICE_CONFIG,
        cwd: Path = REPO_ROOT,
        merge_output: bool = False,
        **settings: str,
    ) -> Self:
        """The service as deployed, ``gunicorn -c gunicorn.conf.py wsgi:app``, over ``store``, on a
        free port; does not wait for it. ``settings`` are its environment variables (SERVICE_*, or
        PORT to take a given port); ``config``: another settings file; ``cwd``: another checkout."""
        env = clean_env(
            {"SERVICE_MODEL_STORE": str(store), "HOST": "127.0.0.1", "PORT": str(free_port()), **settings}
        )
        argv = [sys.executable, "-m", "gunicorn", "-c", config, "wsgi:app"]
        return cls.start(name, argv, env, logs, port=int(env["PORT"]), cwd=cwd, merge_output=merge_output)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def output(self, tail: int = 60) -> str:
        """The last lines the server wrote, for error messages."""
        try:
            if self.stderr_path == self.stdout_path:
                return "\n".join(self.stdout().splitlines()[-tail:])
            stdout, stderr = self.stdout().splitlines()[-tail:], self.stderr().splitlines()[-tail:]
        except OSError:
            return "(no output)"
        return "stdout:\n" + "\n".join(stdout) + "\nstderr:\n" + "\n".join(stderr)

    def wait_until_answering(
        self,
        path: str = "/ready",
        body: bytes | None = None,
        statuses: frozenset[int] = frozenset({200}),
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Poll ``path`` (POST ``body`` if given) until it answers with one of ``statuses``.

        Raises ServerError, with the server's output, if it exits first or stays silent.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} before serving:\n{self.output()}"
                )
            try:
                status, answer = request(self.url(path), body, timeout=5)
            except (OSError, http.client.HTTPException) as error:
                last = repr(error)
            else:
                if status in statuses:
                    return
                last = f"{status} {answer[:300]!r}"
            time.sleep(POLL_INTERVAL)
        raise ServerError(
            f"{self.name} did not answer {path} within {timeout:.0f}s (last: {last}):\n{self.output()}"
        )

    def pids(self) -> dict[int, str]:
        """The live processes of this server: the master and every descendant ("worker")."""
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

    def worker_pids(self) -> list[int]:
        """The master's children: Gunicorn's workers."""
        return sorted(pid for pid, parent in _parents().items() if parent == self.proc.pid)

    def stop(self) -> int:
        """SIGTERM the master by its pid, SIGKILL it if it does not exit in time; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode


# --- A client that reads while it sends ------------------------------------------------------


class DuplexUpload:
    """POST a body as it is made (chunked), sent from a thread while the caller reads the answer.

    A server that streams its answer while it still reads the upload needs a client
    that does both at once (curl does; ``requests`` and ``urllib`` send the whole body
    before they read a byte). ``pieces`` is iterated on the sending thread; ``sent``
    counts the body's bytes sent so far and ``done_sending`` is set once the last
    chunk has gone. Use it as a context manager: leaving it closes the connection and
    waits for the sender.
    """

    def __init__(
        self,
        port: int,
        path: str,
        pieces: Iterator[bytes],
        content_type: str = "text/csv",
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._pieces = pieces
        self.sent = 0
        self.send_error: BaseException | None = None
        self.done_sending = threading.Event()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        self._sock.sendall(head.encode("latin-1"))
        self._sender = threading.Thread(target=self._send, name="duplex-upload", daemon=True)
        self._sender.start()
        self.response = http.client.HTTPResponse(self._sock)

    def _send(self) -> None:
        try:
            for piece in self._pieces:
                if piece:
                    self._sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.sent += len(piece)
            self._sock.sendall(b"0\r\n\r\n")
        except OSError as error:  # the server closed the connection: the answer says why
            self.send_error = error
        finally:
            self.done_sending.set()

    def __enter__(self) -> Self:
        self.response.begin()  # the status line and headers
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._sender.join(timeout=STOP_TIMEOUT)
