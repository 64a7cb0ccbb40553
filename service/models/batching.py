"""Adaptive micro-batching: concurrent small requests to one model version share one model call.

A forest that takes 8 ms to score one row scores a thousand in about 12 ms, so
serving each request with its own call wastes most of the model's time under
load. A ``Batcher`` belongs to one ``LoadedModel`` object (one model *and*
version: a request keeps the snapshot it started with, so versions never mix)
and works as leader and followers, with no thread of its own (nothing is
started before Gunicorn forks, and nothing is left to stop):

- a request whose rows are judged valid, to a model that no call is running
  on, calls it at once with its own rows: a request on an idle model never
  waits, nor pays for the queue;
- requests that arrive while a call runs wait in the queue; when the call ends,
  the oldest of them becomes the next leader and takes the queue (up to
  ``max_rows`` rows) into one vectorised call. Before the call it waits, at most
  ``max_wait`` seconds and only while other requests to the model are still
  being judged (announced by an ``Arrival``), so that they join it;
- the leader runs the call, slices each request's rows out of the answer, hands
  the queue to the next leader and wakes the followers. It always finishes the
  call it gathered, so no follower is ever abandoned (a stopping Gunicorn worker
  finishes the requests it holds, and with them every gathered call).

A call that fails fails only the requests in it: when several shared it, each
retries its own rows alone (outside the queue), so that a model's fault, or a
value the model cannot score, is found and answered per request, exactly as
without batching. Each request is told the seconds of the call that answered it
(shared with the others in it) and how long it waited in the queue.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.errors import PredictionFailed
from service.models.loaded import LoadedModel, Prediction


@dataclass(frozen=True)
class Batching:
    """How concurrent requests are gathered: at most ``max_rows`` rows in one call, and
    at most ``max_wait`` seconds spent waiting for requests still being judged."""

    max_rows: int = 256
    max_wait: float = 0.002


@dataclass(frozen=True)
class Share:
    """One request's part of a model call."""

    prediction: Prediction  # its own rows only
    seconds: float  # the model call that answered it, shared with the others in that call
    waited: float  # in the queue, before that call started


# Told of every gathered model call: the model, its rows, the requests that shared it.
BatchHook = Callable[[LoadedModel, int, int], None]


class _Job:
    __slots__ = ("arrived", "error", "leads", "matrix", "ready", "retry", "share")

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix
        self.arrived = time.perf_counter()
        # A queued request waits on it: set when answered, or when asked to lead. A request
        # that calls an idle model at once never waits, and has none.
        self.ready: threading.Event | None = None
        self.leads = False
        self.share: Share | None = None
        self.error: BaseException | None = None
        self.retry = False  # the shared call failed: predict these rows alone


class Batcher:
    """The queue of one model version's small requests; see the module's docstring."""

    def __init__(self, model: LoadedModel, batching: Batching, on_batch: BatchHook | None = None) -> None:
        self.model = model
        self.batching = batching
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)  # a request joined the queue or withdrew
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._busy = False  # a leader is gathering or calling the model
        self._announced = 0  # requests being judged that will join the queue

    @property
    def waiting(self) -> int:
        """Requests in the queue for the next call (not those of the call running now)."""
        with self._lock:
            return len(self._queue)

    def arrival(self, rows: int) -> Arrival | None:
        """Announce a request of ``rows`` rows while it is judged; None if it is too big to batch."""
        if rows > self.batching.max_rows:
            return None
        with self._lock:
            self._announced += 1
        return Arrival(self)

    def _withdraw(self) -> None:
        with self._lock:
            self._announced -= 1
            self._joined.notify()

    def _predict(self, matrix: np.ndarray) -> Share:
        job = _Job(matrix)
        with self._lock:
            self._announced -= 1
            idle = job.leads = not self._busy
            self._busy = True
            if not idle:
                job.ready = threading.Event()
                self._queue.append(job)
                self._queued_rows += len(matrix)
                self._joined.notify()
        if idle:
            self._lead(alone=job)
        else:
            assert job.ready is not None
            job.ready.wait()
            if job.leads and job.share is None and job.error is None and not job.retry:
                self._lead()  # a call under load, taking over from the last one: it gathers
        if job.retry:
            return self._alone(job)
        if job.error is not None:
            raise job.error
        assert job.share is not None
        return job.share

    def _lead(self, alone: _Job | None = None) -> None:
        """Gather the queue into one call (or call the model for a request ``alone`` on an idle
        model, at once), answer every request in it, pass the lead on."""
        batch: list[_Job] = []
        try:
            batch = [alone] if alone is not None else self._gather()
            self._call(batch)
        finally:
            with self._lock:
                self._busy = bool(self._queue)
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.leads = True
            if successor is not None and successor.ready is not None:
                successor.ready.set()
            for job in batch:
                if job.share is None and job.error is None and not job.retry:
                    job.error = PredictionFailed(self.model.name, self.model.version)
                if job.ready is not None:
                    job.ready.set()

    def _gather(self) -> list[_Job]:
        with self._lock:
            deadline = time.perf_counter() + self.batching.max_wait
            while self._announced > 0 and self._queued_rows < self.batching.max_rows:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._joined.wait(remaining):
                    break
            first = self._queue[0].matrix
            batch, rows, kept = [], 0, deque()
            while self._queue:
                job = self._queue.popleft()
                # Only matrices of one kind are joined (a model's rule set makes one kind):
                # concatenation must not change a value's type.
                fits = job.matrix.dtype == first.dtype and job.matrix.shape[1:] == first.shape[1:]
                if fits and (not batch or rows + len(job.matrix) <= self.batching.max_rows):
                    batch.append(job)
                    rows += len(job.matrix)
                else:
                    kept.append(job)
            self._queue = kept
            self._queued_rows -= rows
        return batch

    def _call(self, batch: list[_Job]) -> None:
        matrix = batch[0].matrix if len(batch) == 1 else np.concatenate([job.matrix for job in batch])
        started = time.perf_counter()
        try:
            prediction = self.model.predict(matrix)
        except PredictionFailed as error:
            if len(batch) == 1:
                batch[0].error = error
            else:
                for job in batch:
                    job.retry = True
            return
        finally:
            seconds = time.perf_counter() - started
            if self._on_batch is not None:
                self._on_batch(self.model, len(matrix), len(batch))
        if len(batch) == 1:  # a call of its own: the whole prediction is its share
            batch[0].share = Share(prediction, seconds, started - batch[0].arrived)
            return
        start = 0
        for job in batch:
            stop = start + len(job.matrix)
            job.share = Share(_rows(prediction, start, stop), seconds, started - job.arrived)
            start = stop

    def _alone(self, job: _Job) -> Share:
        started = time.perf_counter()
        prediction = self.model.predict(job.matrix)
        return Share(prediction, time.perf_counter() - started, started - job.arrived)


class Arrival:
    """A request announced to its model's batcher while its rows are judged.

    ``predict`` joins the queue (once); ``leave`` withdraws a request that will
    not (its rows were refused, or the model was not called). Use it as a
    context manager: leaving is then certain.
    """

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._pending = True

    def predict(self, matrix: np.ndarray) -> Share:
        """``model.predict(matrix)``, as one request's share of a gathered call."""
        if not self._pending or not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
            return self._batcher._alone(_Job(matrix))
        self._pending = False
        return self._batcher._predict(matrix)

    def leave(self) -> None:
        if self._pending:
            self._pending = False
            self._batcher._withdraw()

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()


def _rows(prediction: Prediction, start: int, stop: int) -> Prediction:
    """The rows start..stop of a prediction (labels, values of every target, probabilities, scores)."""
    return Prediction(
        values=prediction.values[start:stop],
        probabilities=None if prediction.probabilities is None else prediction.probabilities[start:stop],
        classes=prediction.classes,
        scores=None if prediction.scores is None else prediction.scores[start:stop],
        targets=prediction.targets,
    )
