"""A streamed CSV answer measured: time to first byte and the worker's peak memory for a large file.

python -m bench.csv_stream [--rows 1000000] [--store DIR]

Starts the real service (``gunicorn -c gunicorn.conf.py wsgi:app``, one worker with
one thread, on a free loopback port), sends the iris rows over and over as one
chunked upload made as it is sent, and reads the answer while sending (as curl does;
see ``local_gunicorn.DuplexUpload``). Prints the time to the answer's first byte and
how much of the upload had been sent by then, the total time, and the worker's peak
resident set (VmHWM) before and after. Every wait is bounded; only the server this
script started is stopped, by its pid.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sklearn import datasets

from bench.procs import start_service
from bench.runner import ensure_demo_models
from local_gunicorn import DuplexUpload, peak_rss

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
PATH = "/v1/models/iris/predict/csv"
TIMEOUT = 600.0  # seconds any one socket operation may wait
ROWS_PER_PIECE = 3000  # about 64 KiB of upload per chunk sent


def iris_file(rows: int) -> Iterator[bytes]:
    """``rows`` iris rows after a header, with an id column, made as they are sent."""
    data = datasets.load_iris().data
    texts = [",".join(repr(float(value)) for value in row) for row in data]
    yield ("id," + ",".join(FEATURES) + "\n").encode()
    for start in range(0, rows, ROWS_PER_PIECE):
        stop = min(rows, start + ROWS_PER_PIECE)
        yield "".join(f"{index},{texts[index % len(texts)]}\n" for index in range(start, stop)).encode()


def measure(port: int, rows: int) -> dict[str, float]:
    """Send the file and read its answer; the figures of that one request."""
    started = time.monotonic()
    with DuplexUpload(port, PATH, iris_file(rows), timeout=TIMEOUT) as upload:
        response = upload.response
        if response.status != 200:
            raise RuntimeError(f"answered {response.status}: {response.read(500)!r}")
        first = response.read1(1 << 16)
        first_byte = time.monotonic() - started
        sent_then = upload.sent
        # Lines end in CRLF; the LF alone is counted, as a piece may end between the two.
        answer_bytes, lines = len(first), first.count(b"\n")
        while piece := response.read1(1 << 16):
            answer_bytes += len(piece)
            lines += piece.count(b"\n")
        if not upload.done_sending.wait(TIMEOUT) or upload.send_error is not None:
            raise RuntimeError(f"the upload did not finish: {upload.send_error!r}")
        uploaded = upload.sent
    if lines != rows + 1:
        raise RuntimeError(f"the answer has {lines} lines, not {rows + 1}")
    return {
        "first_byte_s": first_byte,
        "sent_by_first_byte_mib": sent_then / 2**20,
        "total_s": time.monotonic() - started,
        "upload_mib": uploaded / 2**20,
        "answer_mib": answer_bytes / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the measured file")
    parser.add_argument("--store", type=Path, help="model store (the demo models are trained into it)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-csv-stream-"))
    try:
        store = args.store or work / "store"
        store.mkdir(parents=True, exist_ok=True)
        ensure_demo_models(store)
        server = start_service("csv-stream", store.resolve(), work / "logs", workers=1, threads=1)
        try:
            server.wait_until_answering("/ready")
            [pid] = server.worker_pids()
            at_start = peak_rss(pid)
            measure(server.port, 10_000)  # warm-up: the first request's imports and allocations
            before = peak_rss(pid)
            figures = measure(server.port, args.rows)
            after = peak_rss(pid)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.rows:,} iris rows ({figures['upload_mib']:.1f} MiB up, "
        f"{figures['answer_mib']:.1f} MiB down), one worker, one thread:\n"
        f"  time to first byte   {figures['first_byte_s']:.3f} s "
        f"({figures['sent_by_first_byte_mib']:.2f} MiB of the upload sent by then)\n"
        f"  whole request        {figures['total_s']:.1f} s\n"
        f"  worker peak RSS      {at_start / 2**20:.1f} MiB at start, {before / 2**20:.1f} MiB after a "
        f"10,000-row warm-up, {after / 2**20:.1f} MiB after the file (+{(after - before) / 2**20:.1f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
