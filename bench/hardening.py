"""Memory and answer size under hostile inputs: what one request can cost a worker.

python -m bench.hardening [--repo DIR] [--csv-mib 200] [--store DIR] [--only TEXT]

Each scenario gets a fresh server of one worker with one thread (so the worker's
peak resident set, VmHWM, belongs to that scenario alone), a warm-up request,
then the request under test, streamed up and read back as it arrives:

- a CSV file of ``--csv-mib`` MiB with the prediction audit log on, then an
  immediate graceful stop: peak memory over idle, and audit lines written;
- a CSV header of 40,000 columns over short rows (286 KiB);
- the costliest CSV shapes within the limits (1,000 columns of two-character
  cells, plain and quoted; 1 MiB lines; short rows under 1,000 columns);
- JSON bodies just under the 4 MiB limit that cost the most to read (300,000
  unknown keys, a million empty objects, a row of two million numbers), and the
  Open Inference Protocol's costliest tensors (two million numbers, a million
  nested lists, a million strings).

``--repo`` runs another checkout of the service (an older commit, say) with
this script, to compare before and after on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import Server, start_service
from bench.runner import ensure_demo_models
from local_gunicorn import REPO_ROOT, DuplexUpload, status_value

MIB = 1024 * 1024
IRIS_HEADER = b"sepal_length,sepal_width,petal_length,petal_width"
IRIS_ROWS = b"5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n5.9,3.0,4.2,1.5\n"
WIDE = 1000  # columns: the default SERVICE_MAX_CSV_COLUMNS
AUDIT_SCENARIO = "audit {mib} MiB CSV, audit log on"


@dataclass
class Outcome:
    scenario: str
    status: int
    seconds: float
    idle_mib: float
    peak_growth_mib: float
    answer_bytes: int
    note: str = ""


def _post(server: Server, path: str, body: Iterable[bytes], content_type: str) -> tuple[int, int]:
    """POST a body sent chunked as it is made; (status, answer bytes), the answer read while the
    body is still being sent (a CSV answer streams back as the file is scored)."""
    with DuplexUpload(server.port, path, iter(body), content_type, timeout=600) as upload:
        size = 0
        while piece := upload.response.read(1 << 16):
            size += len(piece)
        return upload.response.status, size


def _repeat(head: bytes, piece: bytes, size: int, tail: bytes = b"") -> Iterator[bytes]:
    yield head
    for _ in range(max(1, size // len(piece))):
        yield piece
    if tail:
        yield tail


def iris_csv(size: int) -> Iterator[bytes]:
    return _repeat(IRIS_HEADER + b"\n", IRIS_ROWS * 3000, size)


def _wide_header() -> bytes:
    return IRIS_HEADER + b"".join(b",c%d" % index for index in range(WIDE - 4)) + b"\n"


def _good_wide_rows(count: int) -> bytes:
    return (b"5.1,3.5,1.4,0.2" + b",12" * (WIDE - 4) + b"\n") * count


def _quoted_wide_rows(count: int) -> bytes:
    return (b'"5.1","3.5","1.4","0.2"' + b',"12"' * (WIDE - 4) + b"\n") * count


def _forty_thousand_columns() -> Iterator[bytes]:
    """The model's four features, then 39,996 more columns; rows of the four features only."""
    header = IRIS_HEADER + b"".join(b",c%d" % index for index in range(4, 40_000)) + b"\n"
    row = b"5.1,3.5,1.4,0.2\n"
    yield header + row * ((286 * 1024 - len(header)) // len(row))


SHAPES: dict[str, Callable[[], Iterator[bytes]]] = {
    "40,000-column header, short rows (286 KiB)": _forty_thousand_columns,
    "1,000 columns of 2-character cells (20 MiB)": lambda: _repeat(
        _wide_header(), _good_wide_rows(100), 20 * MIB
    ),
    "1,000 quoted columns (20 MiB)": lambda: _repeat(_wide_header(), _quoted_wide_rows(100), 20 * MIB),
    "short rows under 1,000 columns (20 MiB)": lambda: _repeat(
        _wide_header() + _good_wide_rows(2000), b"1\n" * 65536, 20 * MIB
    ),
    "lines of 1 MiB, one long cell (20 MiB)": lambda: _repeat(
        IRIS_HEADER + b",note\n", b"5.1,3.5,1.4,0.2," + b"x" * (MIB - 40) + b"\n", 20 * MIB
    ),
    "lines of 1 MiB, ten quoted cells (20 MiB)": lambda: _repeat(
        IRIS_HEADER + b"".join(b",n%d" % index for index in range(10)) + b"\n",
        b"5.1,3.5,1.4,0.2" + (b',"' + b"x," * (50 * 1024) + b'"') * 10 + b"\n",
        20 * MIB,
    ),
}


class Bench:
    def __init__(self, repo: Path, store: Path, work: Path) -> None:
        self.repo, self.store, self.work = repo, store, work

    def server(self, name: str, **settings: str) -> Server:
        server = start_service(
            name, self.store, self.work / "logs", workers=1, threads=1, cwd=self.repo, **settings
        )
        server.wait_until_answering("/ready")
        return server

    def measure(
        self, scenario: str, send: Callable[[Server], tuple[int, int]], **settings: str
    ) -> tuple[Outcome, Server]:
        server = self.server("".join(char if char.isalnum() else "-" for char in scenario)[:40], **settings)
        [pid] = server.worker_pids()  # one worker: SERVICE_WORKERS=1
        status, _ = _post(server, "/v1/models/iris/predict/csv", iris_csv(MIB), "text/csv")  # warm-up
        if status != 200:
            raise RuntimeError(f"warm-up answered {status}")
        server.wait_idle()
        idle = status_value(pid, "VmRSS")
        started = time.monotonic()
        status, size = send(server)
        seconds = time.monotonic() - started
        growth = status_value(pid, "VmHWM") - idle
        return Outcome(scenario, status, seconds, idle / 1024, growth / 1024, size), server

    def audit(self, mib: int) -> Outcome:
        log = self.work / "audit.jsonl"
        outcome, server = self.measure(
            AUDIT_SCENARIO.format(mib=mib),
            lambda server: _post(server, "/v1/models/iris/predict/csv", iris_csv(mib * MIB), "text/csv"),
            SERVICE_PREDICTION_LOG=str(log),
            SERVICE_GRACEFUL_TIMEOUT="30",
        )
        stopping = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)  # at once, as an operator would
        server.proc.wait(timeout=120)
        stop_seconds = time.monotonic() - stopping
        server.stop()
        lines = 0
        with log.open("rb") as handle:
            while piece := handle.read(16 * MIB):
                lines += piece.count(b"\n")
        rows = (
            max(1, mib * MIB // (len(IRIS_ROWS) * 3000)) * 9000
            + max(1, MIB // (len(IRIS_ROWS) * 3000)) * 9000
        )
        log.unlink()
        outcome.note = f"{lines:,} of {rows:,} audit lines written; graceful stop took {stop_seconds:.1f}s"
        return outcome

    def csv_shape(self, scenario: str, body: Callable[[], Iterator[bytes]]) -> Outcome:
        outcome, server = self.measure(
            scenario, lambda server: _post(server, "/v1/models/iris/predict/csv", body(), "text/csv")
        )
        server.stop()
        return outcome

    def json_body(self, scenario: str, path: str, body: bytes) -> Outcome:
        outcome, server = self.measure(
            f"{scenario} ({len(body) / 1e6:.1f} MB)",
            lambda server: _post(server, path, [body], "application/json"),
        )
        server.stop()
        return outcome


def _json_bodies() -> dict[str, tuple[str, bytes]]:
    """JSON bodies just under the 4 MiB limit that cost the most to read or to refuse."""
    limit = 4 * MIB - 64
    return {
        "JSON body of 300,000 unknown keys": (
            "/predict",
            json.dumps({f"k{index}": 1 for index in range(300_000)}, separators=(",", ":")).encode(),
        ),
        "JSON list of 1.4 million empty objects": (
            "/predict/batch",
            b"[" + b",".join([b"{}"] * (limit // 3)) + b"]",
        ),
        "JSON rows of 2 million one-digit numbers": (
            "/predict/batch",
            b'{"instances": [[' + b",".join([b"1"] * (limit // 2 - 16)) + b"]]}",
        ),
        # The Open Inference Protocol's tensors: one row (within the rows limit) of every element.
        "V2 tensor of 2 million one-digit numbers": _v2_tensor("FP64", b"1", 2, limit),
        "V2 tensor of a million nested one-element lists": _v2_tensor("FP64", b"[1]", 4, limit),
        "V2 BYTES tensor of a million one-letter strings": _v2_tensor("BYTES", b'"a"', 4, limit),
    }


def _v2_tensor(datatype: str, element: bytes, size: int, limit: int) -> tuple[str, bytes]:
    """A V2 inference request of one [1, N] tensor whose elements, ``size`` bytes each, fill ``limit``."""
    count = limit // size - 32
    head = f'{{"inputs":[{{"name":"input","shape":[1,{count}],"datatype":"{datatype}","data":['
    return "/v2/models/iris/infer", head.encode() + b",".join([element] * count) + b"]}]}"


def report(outcomes: list[Outcome], repo: Path) -> str:
    lines = [
        f"Service checkout: {repo}",
        "",
        "| Scenario | Status | Seconds | Idle RSS (MiB) | Peak RSS over idle (MiB) | Answer bytes | Note |",
        "|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        lines.append(
            f"| {outcome.scenario} | {outcome.status} | {outcome.seconds:.1f} | {outcome.idle_mib:.0f} | "
            f"{outcome.peak_growth_mib:.1f} | {outcome.answer_bytes:,} | {outcome.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout of the service to run")
    parser.add_argument("--csv-mib", type=int, default=200, help="size of the audited CSV upload")
    parser.add_argument("--store", type=Path, help="model store (the demo models are trained into it)")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this text")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    try:
        store = args.store or work / "store"
        store.mkdir(parents=True, exist_ok=True)
        ensure_demo_models(store)
        bench = Bench(args.repo.resolve(), store.resolve(), work)

        def chosen(scenario: str) -> bool:
            return args.only.casefold() in scenario.casefold()

        audit = AUDIT_SCENARIO.format(mib=args.csv_mib)
        outcomes = [bench.audit(args.csv_mib)] if chosen(audit) else []
        outcomes += [bench.csv_shape(name, body) for name, body in SHAPES.items() if chosen(name)]
        outcomes += [
            bench.json_body(name, *request) for name, request in _json_bodies().items() if chosen(name)
        ]
        print(report(outcomes, args.repo))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
