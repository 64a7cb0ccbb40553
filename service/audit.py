"""The prediction audit log: one JSON line per predicted row, for drift analysis and debugging.

Writing happens on a background thread of each worker, so a request only puts
one item on a queue. Every batch of lines reaches the file in a single
``write()`` on a descriptor opened with ``O_APPEND``: the kernel appends each
write whole, so lines from several workers never interleave. ``close()`` drains
the queue; Gunicorn calls it when a worker stops gracefully (``worker_exit``),
and ``atexit`` covers other exits. A worker killed outright (SIGKILL, or the
timeout) loses what it had not yet written.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.models import Prediction
from service.models.loaded import probability_keys


@dataclass(frozen=True)
class _Batch:
    time: str
    request_id: str
    model: str
    version: str
    features: tuple[str, ...]
    inputs: np.ndarray
    prediction: Prediction


_STOP = object()


class PredictionAuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        features: tuple[str, ...],
        inputs: np.ndarray,
        prediction: Prediction,
    ) -> None:
        """Queue the rows of one request; formatting and writing happen off the request path."""
        self._ensure_writer()
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        self._queue.put(_Batch(now, request_id, model, version, features, inputs, prediction))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued so far and stop the writer (in this process)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(_STOP)
        thread.join(timeout)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _ensure_writer(self) -> None:
        # Threads do not survive fork(): each worker starts its own writer on first use.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._thread = threading.Thread(target=self._write_forever, name="prediction-audit", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            batches = [self._queue.get()]
            while True:  # take whatever else is waiting: one write for all of it
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = _STOP in batches
            lines = [line for batch in batches if batch is not _STOP for line in _lines(batch)]
            if lines and self._fd is not None:
                os.write(self._fd, "".join(lines).encode("utf-8"))


def _lines(batch: _Batch) -> list[str]:
    prediction = batch.prediction
    values = prediction.values.tolist()
    probabilities = prediction.probabilities.tolist() if prediction.probabilities is not None else None
    labels = probability_keys(prediction.classes or ())
    lines = []
    for index, row in enumerate(batch.inputs.tolist()):
        entry: dict[str, Any] = {
            "time": batch.time,
            "request_id": batch.request_id,
            "model": batch.model,
            "version": batch.version,
            "row": index,
            "inputs": dict(zip(batch.features, row, strict=True)),
            "output": values[index],
        }
        if probabilities is not None:
            entry["probabilities"] = dict(zip(labels, probabilities[index], strict=True))
        lines.append(json.dumps(entry, default=str) + "\n")
    return lines
