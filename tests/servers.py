"""The real Gunicorn server in tests: what pytest adds to the runner shared with the benchmark.

Starting a server on a free loopback port, waiting for it and stopping it by its
PID is ``local_gunicorn``'s (the benchmark starts its servers the same way). Here a
server that does not start fails the test with its output, its JSON log lines are
read (a line that is not a JSON object fails the test), and requests go through
``requests``, a test dependency the benchmark does without.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import local_gunicorn
from local_gunicorn import REPO_ROOT as REPO_ROOT
from local_gunicorn import ServerError, clean_env

BIN = Path(sys.executable).parent
FLASK = BIN / "flask"

START_TIMEOUT = 60.0  # seconds for a server to answer, or to exit by itself
REQUEST_TIMEOUT = 20.0  # per request: a hung worker fails the test instead of hanging it

JSON = "application/json"
PROBLEM = "application/problem+json"

# Every log record (Gunicorn's access and error logs, the app's own) is one JSON
# object per line on stdout: see service/logs.py.
ACCESS_LOGGER = "service.access"

# Two workers, so that tests see requests spread over processes; a short graceful
# timeout, as an idle test server has nothing to finish when it is stopped.
TEST_SETTINGS = {"SERVICE_WORKERS": "2", "SERVICE_GRACEFUL_TIMEOUT": "5"}


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


# --- Running a server -----------------------------------------------------------


class Server(local_gunicorn.Server):
    """A server started by a test, with its log records read as the tests expect them."""

    def log_records(self) -> list[dict[str, Any]]:
        """Every record on stdout; a line that is not a JSON object fails the test.

        The last line is skipped while the server runs, as it may be half-written.
        """
        text = self.stdout()
        if self.alive() and not text.endswith("\n"):
            text = text.rpartition("\n")[0]
        return parse_log_lines(text)

    def messages(self) -> list[dict[str, Any]]:
        """Records from stdout and stderr both, leniently: whatever the server said, searchable."""
        return parse_log_lines(self.stdout(), strict=False) + parse_log_lines(self.stderr(), strict=False)

    def access_log(self) -> list[dict[str, Any]]:
        """Gunicorn's access-log records: request_id, method, path, route, status, pid, model, version."""
        return [record for record in self.log_records() if record.get("logger") == ACCESS_LOGGER]


def server_env(store: Path, **settings: str) -> dict[str, str]:
    """This process's environment with the service's own settings replaced, as a test server gets it."""
    return clean_env({"SERVICE_MODEL_STORE": str(store), **TEST_SETTINGS, **settings})


def launch(store: Path, logs: Path, **settings: str) -> Server:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` over ``store``; does not wait."""
    return Server.start_service(store, logs, **{**TEST_SETTINGS, **settings})


def wait_until_answering(
    server: Server, path: str = "/ready", statuses: frozenset[int] = frozenset({200})
) -> None:
    """Poll ``path`` until it answers with one of ``statuses``; fail if the server exits or stalls."""
    try:
        server.wait_until_answering(path, statuses=statuses, timeout=START_TIMEOUT)
    except ServerError as error:
        pytest.fail(str(error))


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


def worker_pid(server: Server) -> int:
    """The one worker of a server started with SERVICE_WORKERS=1."""
    children = server.worker_pids()
    assert len(children) == 1, children
    return children[0]


def post_json(server: Server, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return http("POST", server.url(path), data=json.dumps(body), headers={"Content-Type": JSON}, **kwargs)


def media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def run_in_repo(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` run to its end from the repository's root with ``env`` alone, output captured."""
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def raw_exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes that no HTTP client library would send; return status, headers, body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body
