"""Running h2load (nghttp2's HTTP/2 load generator) for gRPC, and reading its per-request log.

wrk speaks HTTP/1.1 only; a gRPC call is an HTTP/2 POST of one length-prefixed
message with ``content-type: application/grpc`` and ``te: trailers``, which h2load
sends from a file (``-d``), one stream at a time per connection (``-m 1``, as wrk
keeps one request in flight per connection). Its ``--log-file`` holds one line per
finished request: start (µs since the epoch), HTTP status (-1: the stream failed),
µs until the end of the response. Requests still in flight when the run ends are
not logged, as wrk does not count them.

h2load sees the HTTP status only, and a failed gRPC call is an HTTP 200 whose
grpc-status trailer says otherwise: bench/checks.py checks one call's answer
before any run, and bench/measure.py counts the calls the service answered with
another status (its /metrics) during each run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRACE_SECONDS = 60  # h2load stops itself after its duration; this only catches one that hangs
HEADERS = ("content-type: application/grpc", "te: trailers")
FAILED_STREAM = -1


class H2loadError(RuntimeError):
    pass


@dataclass(frozen=True)
class H2loadResult:
    requests: int  # answered (any HTTP status)
    duration_us: int
    non_2xx: int  # answered with an HTTP status outside 2xx
    socket_errors: int  # streams that failed without an answer
    p50_us: float
    p99_us: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0


def h2load_binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise H2loadError("h2load is not installed (make bench-deps installs Debian's nghttp2-client)")
    return found


def run(url: str, path: str, body: Path, *, connections: int, seconds: int) -> H2loadResult:
    """POST ``body`` to ``url + path`` over HTTP/2 for ``seconds`` with ``connections`` connections."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        log = Path(scratch) / "requests.tsv"
        argv = [
            h2load_binary(),
            "-c",
            str(connections),
            "-m",
            "1",
            "-t",
            str(min(connections, 2)),
            # Timing-based: the main phase lasts exactly this long (no --warm-up-time: the
            # bench's warm-up is a run of its own, so that the server's CPU time read around
            # this one is this one's).
            "-D",
            str(seconds),
            "-d",
            str(body),
            *(flag for header in HEADERS for flag in ("-H", header)),
            "--log-file",
            str(log),
            url + path,
        ]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=seconds + GRACE_SECONDS,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise H2loadError(f"h2load did not finish within {seconds + GRACE_SECONDS}s") from None
        text = log.read_text() if log.exists() else ""
    if done.returncode != 0:
        raise H2loadError(
            f"h2load exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return parse(text, seconds)


def parse(log: str, seconds: int) -> H2loadResult:
    """The figures of one run from its log; ``seconds``: the main phase's duration."""
    rows = [line.split("\t") for line in log.splitlines() if line.strip()]
    try:
        statuses = np.array([int(row[1]) for row in rows], dtype=np.int64)
        elapsed = np.array([int(row[2]) for row in rows], dtype=np.float64)
    except (IndexError, ValueError):
        raise H2loadError(f"unreadable h2load log line among: {log[:300]!r}") from None
    answered = statuses != FAILED_STREAM
    p50, p99 = np.percentile(elapsed[answered], [50, 99]) if answered.any() else (0.0, 0.0)
    return H2loadResult(
        requests=int(answered.sum()),
        duration_us=seconds * 1_000_000,
        non_2xx=int((answered & ((statuses < 200) | (statuses > 299))).sum()),
        socket_errors=int((~answered).sum()),
        p50_us=float(p50),
        p99_us=float(p99),
    )
