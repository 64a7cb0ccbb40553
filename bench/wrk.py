"""Running wrk with bench/post.lua (or post_binary.lua) and reading the one JSON line its done() prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
# The binary tensor extension's bodies: cut by size, sent with their header length.
BINARY_SCRIPT = LUA_SCRIPT.with_name("post_binary.lua")
REQUEST_TIMEOUT = "10s"
# wrk stops itself after its duration; this only catches a wrk that hangs.
GRACE_SECONDS = 60


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_us: int
    bytes: int
    errors: dict[str, int]
    p50_us: float
    p99_us: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def non_2xx(self) -> int:
        """Answers with status above 399, as wrk counts them."""
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(count for kind, count in self.errors.items() if kind != "status")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed (make bench-deps installs Debian's wrk)")
    return found


def run(
    url: str,
    path: str,
    bodies: Path,
    *,
    connections: int,
    seconds: int,
    script: Path = LUA_SCRIPT,
    script_args: tuple[str, ...] = (),
) -> WrkResult:
    """Load ``url + path`` for ``seconds`` with ``connections`` keep-alive connections; ``script``
    is given the bodies, the path, then ``script_args``."""
    argv = [
        wrk_binary(),
        "-t",
        str(min(connections, 2)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        REQUEST_TIMEOUT,
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
        path,
        *script_args,
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + GRACE_SECONDS, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {seconds + GRACE_SECONDS}s") from None
    return parse(done.stdout, done.stderr, done.returncode)


def parse(stdout: str, stderr: str = "", returncode: int = 0) -> WrkResult:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            return WrkResult(
                requests=int(data["requests"]),
                duration_us=int(data["duration_us"]),
                bytes=int(data["bytes"]),
                errors={kind: int(count) for kind, count in data["errors"].items()},
                p50_us=float(data["latency_p50_us"]),
                p99_us=float(data["latency_p99_us"]),
            )
    raise WrkError(f"wrk exited with {returncode} without a result line:\n{stdout[-2000:]}\n{stderr[-2000:]}")
