"""The prediction audit log: one JSON line per predicted row, for drift analysis and debugging.

A request hands its rows to a writer thread of its worker and goes on; the
thread formats and appends them. What waits for the writer is bounded: once
``max_queued_values`` input and output values are queued, a request waits
until the writer has caught up (back-pressure), so a worker's memory does not
grow with the size of an upload, however fast it arrives. The writer formats a
batch a slice of rows at a time, and each slice reaches the file in one
``write()`` on a descriptor opened with ``O_APPEND``: the kernel appends each
write whole, so lines from several workers never interleave.

``close(deadline)`` writes out everything queued. Gunicorn calls it when a
worker stops gracefully (``worker_exit``), with the time the master allows
before it kills the worker. Lines that cannot be written (the deadline passes,
the disk refuses them) are counted: the log says how many, and ``on_dropped``
(a metric) counts them. A worker killed outright (SIGKILL, or the timeout)
loses what it had not written yet.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.models.core import Observer, Outcome
from service.models.loaded import Prediction, probability_keys

log = logging.getLogger(__name__)

# About 2 MiB of float inputs and outputs (more for string categories); one
# request larger than this is still queued, alone.
MAX_QUEUED_VALUES = 262_144
# Values formatted per write(): each write is a few MiB of text at most.
SLICE_VALUES = 65_536


@dataclass(frozen=True)
class _Batch:
    time: str
    request_id: str
    model: str
    version: str
    features: tuple[str, ...]
    inputs: np.ndarray
    prediction: Prediction
    row_numbers: np.ndarray | None  # each row's index within its request; None: 0, 1, 2...
    flags: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # warnings by position
    client: str | None = None  # the API client's name, when keys are on

    @property
    def rows(self) -> int:
        return len(self.inputs)

    @property
    def values(self) -> int:
        """Input and output values held: what the batch costs in memory."""
        prediction = self.prediction
        outputs = prediction.values.size // max(self.rows, 1)
        probabilities = prediction.probabilities.shape[1] if prediction.probabilities is not None else 0
        scores = 1 if prediction.scores is not None else 0
        return self.rows * (len(self.features) + outputs + probabilities + scores)


class PredictionAuditLog(Observer):
    def __init__(
        self,
        path: Path,
        *,
        max_queued_values: int = MAX_QUEUED_VALUES,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_queued_values = max_queued_values
        self._on_dropped = on_dropped
        self._changed = threading.Condition()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._pending: collections.deque[_Batch] = collections.deque()
        self._queued_values = 0  # of the pending batches and the one being written
        self._stopping = False
        self._deadline: float | None = None  # time.monotonic() by which the writer gives up
        self._closed = False

    # --- As an observer of the prediction core ----------------------------------

    def scored(self, outcome: Outcome) -> None:
        if outcome.prediction is None or outcome.matrix is None:
            return
        model = outcome.model
        self.record(
            outcome.request_id,
            model.name,
            model.version,
            model.manifest.feature_names,
            outcome.matrix,
            outcome.prediction,
            row_numbers=outcome.rows,
            flags=outcome.flags,
            client=outcome.client,
        )

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        features: tuple[str, ...],
        inputs: np.ndarray,
        prediction: Prediction,
        *,
        row_numbers: np.ndarray | None = None,
        flags: dict[int, dict[str, list[str]]] | None = None,
        client: str | None = None,
    ) -> None:
        """Queue predicted rows of one request; waits while the writer is too far behind.

        ``row_numbers``: each row's index within its request (rows of one request
        may be recorded in several parts); by default 0, 1, 2... ``flags``: the
        warnings of flagged rows (by position in ``inputs``), marked in their lines.
        """
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        batch = _Batch(
            now, request_id, model, version, features, inputs, prediction, row_numbers, flags or {}, client
        )
        with self._changed:
            self._ensure_writer()
            if self._closed:
                self._dropped(batch.rows, "the worker is stopping and its audit writer has finished")
                return
            # Back-pressure: a batch waits while others fill the queue; alone, any batch fits.
            while self._queued_values and self._queued_values + batch.values > self.max_queued_values:
                self._changed.wait()
            self._pending.append(batch)
            self._queued_values += batch.values
            self._changed.notify_all()

    def close(self, deadline: float | None = None) -> None:
        """Write what is queued and stop the writer (in this process), by ``deadline`` if given.

        ``deadline`` is a ``time.monotonic()`` value; lines still unwritten then
        are dropped, counted and logged.
        """
        with self._changed:
            thread = self._thread
            if thread is None or self._pid != os.getpid() or self._closed:
                self._closed = True
                return
            self._stopping = True
            self._deadline = deadline
            self._changed.notify_all()
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()) + 0.5)
        with self._changed:
            self._closed = True
            if thread.is_alive():  # stuck in write(): what it holds is lost
                rows = sum(batch.rows for batch in self._pending)
                self._pending.clear()
                self._dropped(rows, "the audit writer did not finish in time", at_least=True)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _ensure_writer(self) -> None:
        # Threads do not survive fork(): each worker starts its own writer on first use.
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._pending = collections.deque()
        self._queued_values = 0
        self._stopping = self._closed = False
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._thread = threading.Thread(target=self._write_forever, name="prediction-audit", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    return
                batch = self._pending[0]  # stays counted until written
            written = self._write(batch)
            with self._changed:
                self._pending.popleft()
                self._queued_values -= batch.values
                self._changed.notify_all()
                if written < batch.rows:
                    rows = batch.rows - written + sum(later.rows for later in self._pending)
                    self._pending.clear()
                    self._queued_values = 0
                    self._changed.notify_all()
                    self._dropped(rows, "the worker had to stop before they were written")

    def _write(self, batch: _Batch) -> int:
        """Write the batch a slice at a time; the rows written (fewer once the deadline has passed)."""
        step = max(1, SLICE_VALUES * batch.rows // max(batch.values, 1))
        written = 0
        while written < batch.rows:
            if self._deadline is not None and time.monotonic() > self._deadline:
                return written
            end = min(written + step, batch.rows)
            try:
                _write_all(self._fd, _lines(batch, written, end))
            except OSError as error:
                self._dropped(end - written, f"they could not be written to {self.path}: {error.strerror}")
            except Exception:  # a fault of formatting must not stop the writer that requests wait for
                log.exception("prediction audit log: rows %d-%d of %s", written, end, batch.request_id)
                self._dropped(end - written, "they could not be formatted")
            written = end
        return written

    def _dropped(self, rows: int, why: str, *, at_least: bool = False) -> None:
        if not rows:
            return
        log.error(
            "prediction audit log: %s%d line(s) dropped: %s", "at least " if at_least else "", rows, why
        )
        if self._on_dropped is not None:
            self._on_dropped(rows)


def _write_all(fd: int | None, data: bytes) -> None:
    if fd is None:
        raise OSError(9, "the audit log is closed")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lines(batch: _Batch, start: int, end: int) -> bytes:
    """The JSON lines of rows ``start`` to ``end`` of one batch."""
    prediction = batch.prediction
    values = prediction.values[start:end].tolist()
    if prediction.targets is not None:  # several outputs: each row's values by target name
        values = [dict(zip(prediction.targets, row, strict=True)) for row in values]
    probabilities = prediction.probabilities
    rows = probabilities[start:end].tolist() if probabilities is not None else None
    labels = probability_keys(prediction.classes or ()) if probabilities is not None else []
    scores = prediction.scores[start:end].tolist() if prediction.scores is not None else None
    common = {
        "time": batch.time,
        "request_id": batch.request_id,
        "model": batch.model,
        "version": batch.version,
    }
    if batch.client is not None:
        common["client"] = batch.client
    numbers = range(start, end) if batch.row_numbers is None else batch.row_numbers[start:end].tolist()
    lines = []
    for offset, (number, inputs) in enumerate(zip(numbers, batch.inputs[start:end].tolist(), strict=True)):
        entry: dict[str, Any] = {
            **common,
            "row": number,
            "inputs": dict(zip(batch.features, inputs, strict=True)),
            "output": values[offset],
        }
        if rows is not None:
            entry["probabilities"] = dict(zip(labels, rows[offset], strict=True))
        flagged = batch.flags.get(start + offset)
        if flagged is not None:
            entry["warnings"] = flagged
        if scores is not None:
            entry["score"] = scores[offset]
        lines.append(_dumps(entry))
    lines.append(b"")
    return b"\n".join(lines)


def _dumps(entry: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(entry, default=str)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which the standard library writes
        return json.dumps(entry, default=str).encode()
