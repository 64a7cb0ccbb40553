"""Running the real Gunicorn server for tests: on a free loopback port, stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUNICORN = BIN / "gunicorn"
FLASK = BIN / "flask"

START_TIMEOUT = 60.0  # seconds for a server to answer, or to exit by itself
REQUEST_TIMEOUT = 20.0  # per request: a hung worker fails the test instead of hanging it
STOP_TIMEOUT = 15.0

JSON = "application/json"
PROBLEM = "application/problem+json"

# Every log record (Gunicorn's access and error logs, the app's own) is one JSON
# object per line on stdout: see service/logs.py.
ACCESS_LOGGER = "gunicorn.access"


def parse_log_lines(text: str, *, strict: bool = True) -> list[dict[str, Any]]:
    """The JSON log records of ``text``, one per non-empty line.

    ``strict``: a line that is not a whole JSON object fails the test, quoting it.
    Otherwise such a line becomes ``{"message": line}``, so it can still be searched.
    """
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if strict:
                pytest.fail(f"log line {number} is not a JSON object: {line!r}")
            record = {"message": line}
        records.append(record)
    return records


# --- Running a server -----------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_session() -> requests.Session:
    """A session that talks to the loopback server directly, whatever proxy the environment names."""
    session = requests.Session()
    session.trust_env = False
    return session


def http(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request on a fresh connection, bounded by REQUEST_TIMEOUT unless told otherwise."""
    kwargs.setdefault("timeout", REQUEST_TIMEOUT)
    with local_session() as session:
        return session.request(method, url, **kwargs)


def server_env(store: Path, **settings: str) -> dict[str, str]:
    """This process's environment with the service's own settings replaced."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SERVICE_") and key not in {"HOST", "PORT"}
    }
    env.update(
        {
            "SERVICE_MODEL_STORE": str(store),
            "SERVICE_WORKERS": "2",
            "SERVICE_GRACEFUL_TIMEOUT": "5",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
        }
    )
    env.update(settings)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path
    _files: list[Any] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self, tail: int = 60) -> str:
        """The last lines of stdout and stderr, for failure messages."""
        stdout, stderr = self.stdout().splitlines()[-tail:], self.stderr().splitlines()[-tail:]
        return "stdout:\n" + "\n".join(stdout) + "\nstderr:\n" + "\n".join(stderr)

    def log_records(self) -> list[dict[str, Any]]:
        """Every record on stdout; a line that is not a JSON object fails the test.

        The last line is skipped while the server runs, as it may be half-written.
        """
        text = self.stdout()
        if self.proc.poll() is None and not text.endswith("\n"):
            text = text.rpartition("\n")[0]
        return parse_log_lines(text)

    def messages(self) -> list[dict[str, Any]]:
        """Records from stdout and stderr both, leniently: whatever the server said, searchable."""
        return parse_log_lines(self.stdout(), strict=False) + parse_log_lines(self.stderr(), strict=False)

    def access_log(self) -> list[dict[str, Any]]:
        """Gunicorn's access-log records: request_id, method, path, route, status, pid, model, version."""
        return [record for record in self.log_records() if record.get("logger") == ACCESS_LOGGER]

    def stop(self) -> int:
        """SIGTERM the master by its pid; SIGKILL it if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        for handle in self._files:
            handle.close()
        return self.proc.returncode


def launch(store: Path, logs: Path, **settings: str) -> Server:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` over ``store``; does not wait."""
    logs.mkdir(parents=True, exist_ok=True)
    env = server_env(store, **settings)
    stdout_path, stderr_path = logs / "stdout.log", logs / "stderr.log"
    stdout, stderr = stdout_path.open("wb"), stderr_path.open("wb")
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    return Server(proc, int(env["PORT"]), stdout_path, stderr_path, [stdout, stderr])


def wait_until_answering(
    server: Server, path: str = "/ready", statuses: frozenset[int] = frozenset({200})
) -> None:
    """Poll ``path`` until it answers with one of ``statuses``; fail if the server exits or stalls."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.proc.returncode} before serving:\n{server.output()}")
        try:
            response = http("GET", server.url(path), timeout=2)
        except requests.RequestException as error:
            last = repr(error)
        else:
            if response.status_code in statuses:
                return
            last = f"{response.status_code} {response.text[:300]}"
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer {path} within {START_TIMEOUT}s (last: {last}):\n{server.output()}")


@contextlib.contextmanager
def running_server(
    store: Path,
    logs: Path,
    *,
    ready_path: str = "/ready",
    ready_statuses: frozenset[int] = frozenset({200}),
    **settings: str,
) -> Iterator[Server]:
    server = launch(store, logs, **settings)
    try:
        wait_until_answering(server, ready_path, ready_statuses)
        yield server
    finally:
        server.stop()


def wait_for_exit(server: Server) -> int:
    """The exit code of a server that is expected to stop by itself."""
    try:
        return server.proc.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.stop()
        pytest.fail(f"gunicorn was still running after {START_TIMEOUT}s:\n{server.output()}")
    finally:
        for handle in server._files:
            handle.close()


def parent_pid(pid: int) -> int:
    """The parent of a live process, from /proc (the comm field may hold spaces)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def worker_pids(server: Server) -> list[int]:
    """The master's children, found through /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if parent_pid(int(stat.parent.name)) == server.proc.pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return sorted(children)


def worker_pid(server: Server) -> int:
    """The one worker of a server started with SERVICE_WORKERS=1."""
    children = worker_pids(server)
    assert len(children) == 1, children
    return children[0]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def peak_rss(pid: int) -> int:
    """VmHWM, the peak resident set size of a process, in bytes."""
    return _status_kib(pid, "VmHWM") * 1024


def rss(pid: int) -> int:
    """VmRSS, the resident set size of a process now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def post_json(server: Server, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return http("POST", server.url(path), data=json.dumps(body), headers={"Content-Type": JSON}, **kwargs)


def media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()
