"""The prediction core: what every front end calls, however its rows arrived.

A front end (v1 JSON, CSV files, later the V2 protocol and gRPC) parses its
input into ``Rows`` and renders what comes back; between the two, this core
does the same steps for all of them:

1. judge the rows with the model's rule set (``Rows.check``);
2. refuse the request (strict) or set the bad rows aside (partial);
3. flag the valid rows' values that the rule set serves with a warning
   (outside the training data's range, an unseen category);
4. predict the valid rows in one vectorised call: with batching on, a small
   request's rows may share that call with other requests to the same model
   version (``service.models.batching``), and get exactly their own rows back;
5. tell the observers (metrics, the audit log) what happened, each predicted
   row by its index within the whole request.

A request may hand its rows over in several parts (a CSV file, chunk by chunk):
``PredictionRequest`` numbers them across parts. The core knows no HTTP and no
Flask: the app wires the observers in, and turns the typed errors it raises
(``InvalidInput``, ``PredictionFailed``) into answers in one place.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Protocol

import numpy as np

from service.errors import InvalidInput, PredictionFailed
from service.models.batching import Arrival, Batcher, Batching
from service.models.loaded import LoadedModel, Prediction
from service.models.rules import Checked, RowErrors, RuleSet


class Rows(Protocol):
    """Rows as a front end parsed them, able to be judged by a rule set."""

    def __len__(self) -> int: ...

    def check(self, rules: RuleSet, *, strict: bool = True) -> Checked: ...

    def refuse(self, errors: RowErrors) -> InvalidInput:
        """The error for a request refused for ``errors``, naming rows as this front end does."""
        ...


@dataclass(frozen=True)
class Outcome:
    """What one part of a request came to, as observers see it."""

    model: LoadedModel
    request_id: str
    rows: np.ndarray  # each predicted row's index within the whole request
    matrix: np.ndarray | None  # those rows, as the model got them
    prediction: Prediction | None
    invalid: int  # rows refused
    failed: int  # valid rows the model failed on
    seconds: float  # the model call alone (a gathered call's whole time, shared by its requests)
    flags: RowErrors = field(default_factory=dict)  # warnings by position in ``rows``
    waited: float | None = None  # in the batcher's queue before the call; None: not batched
    client: str | None = None  # the API client that sent the request, when keys are on


class Observer:
    """Told what the core did; the app wires observers in (metrics, the audit log)."""

    def scored(self, outcome: Outcome) -> None:
        """One part of a request was judged (and, if any row passed, predicted)."""

    def finished(self, model: LoadedModel, rows: int) -> None:
        """A request is over; ``rows``: every row it handed to the core."""

    def batched(self, model: LoadedModel, rows: int, requests: int) -> None:
        """The batcher made one model call of ``rows`` rows for ``requests`` requests."""


@dataclass(frozen=True)
class Scored:
    """The answer for one part of a request: the prediction of its valid rows, the others' faults."""

    checked: Checked
    prediction: Prediction | None  # for the rows where ``checked.valid``, in order; None if none is
    warnings: RowErrors = field(default_factory=dict)  # by row index within the part, like errors

    @property
    def valid(self) -> np.ndarray:
        return self.checked.valid

    @property
    def errors(self) -> RowErrors:
        return self.checked.errors


class PredictionCore:
    """Judges, predicts and reports; one per app, shared by every front end."""

    def __init__(self, observers: Sequence[Observer] = (), batching: Batching | None = None) -> None:
        self.observers = tuple(observers)
        self.batching = batching  # None: every request calls the model alone
        self._batchers: dict[int, Batcher] = {}
        self._batchers_lock = threading.Lock()

    def request(self, model: LoadedModel, request_id: str, client: str | None = None) -> PredictionRequest:
        """Start a request on ``model`` (one snapshot, used for all its parts); ``client``: who sent it."""
        return PredictionRequest(self, model, request_id, client)

    def batcher(self, model: LoadedModel) -> Batcher | None:
        """The batcher of this very model object (one version), made on first use; None when off.

        Made in the process that predicts (a Gunicorn worker, after the fork), never shared
        between two model objects: requests on another version have a queue of their own.
        """
        if self.batching is None:
            return None
        found = self._batchers.get(id(model))
        if found is not None and found.model is model:
            return found
        with self._batchers_lock:
            found = self._batchers.get(id(model))
            if found is None or found.model is not model:
                found = self._batchers[id(model)] = Batcher(model, self.batching, self._batched)
            return found

    def _batched(self, model: LoadedModel, rows: int, requests: int) -> None:
        for observer in self.observers:
            observer.batched(model, rows, requests)


class PredictionRequest:
    """One request's rows, in one or more parts; use it as a context manager."""

    def __init__(
        self, core: PredictionCore, model: LoadedModel, request_id: str, client: str | None = None
    ) -> None:
        self._observers = core.observers
        self._batcher = core.batcher(model)
        self.model = model
        self.request_id = request_id
        self.client = client
        self.rows = 0  # handed over so far: the index of the next part's first row

    def score(self, rows: Rows, *, partial: bool = False) -> Scored:
        """Judge and predict one part of the request.

        Strict (the default): one bad row refuses the part with ``rows.refuse``,
        nothing is predicted. ``partial``: the valid rows are predicted, the
        others come back with their faults.
        """
        first, count = self.rows, len(rows)
        self.rows += count
        # Announced while its rows are judged, so that a gathered call may wait for them.
        arrival = self._batcher.arrival(count) if self._batcher is not None else None
        with arrival or contextlib.nullcontext():
            return self._score(rows, first, count, arrival, partial=partial)

    def _score(self, rows: Rows, first: int, count: int, arrival: Arrival | None, *, partial: bool) -> Scored:
        checked = rows.check(self.model.rules, strict=not partial)
        if checked.matrix is None:
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, count, 0, 0.0))
            raise rows.refuse(checked.errors)
        invalid = len(checked.errors)
        valid = np.flatnonzero(checked.valid)
        if not len(valid):
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, invalid, 0, 0.0))
            return Scored(checked, None)
        flags = self.model.rules.flags(checked.matrix)
        try:
            prediction, seconds, waited = self._predict(checked.matrix, arrival)
        except PredictionFailed:
            if not flags:
                self._tell(Outcome(self.model, self.request_id, _NONE, None, None, invalid, len(valid), 0.0))
                raise
            return self._without_flagged(rows, checked, valid, flags, first, partial=partial)
        self._tell(
            Outcome(
                self.model,
                self.request_id,
                valid + first,
                checked.matrix,
                prediction,
                invalid,
                0,
                seconds,
                flags,
                waited,
            )
        )
        warnings = {int(valid[position]): found for position, found in flags.items()} if flags else {}
        return Scored(checked, prediction, warnings)

    def _predict(self, matrix: np.ndarray, arrival: Arrival | None) -> tuple[Prediction, float, float | None]:
        """The prediction of ``matrix``, the model call's seconds and the time queued for it (if batched)."""
        if arrival is None:
            started = time.perf_counter()
            prediction = self.model.predict(matrix)
            return prediction, time.perf_counter() - started, None
        share = arrival.predict(matrix)
        return share.prediction, share.seconds, share.waited

    def _without_flagged(
        self, rows: Rows, checked: Checked, valid: np.ndarray, flags: RowErrors, first: int, *, partial: bool
    ) -> Scored:
        """The model failed on rows some of whose values lie outside its training data.

        The flagged rows it cannot score are found by halving (within a budget of
        model calls; past it, the rest are taken as unscorable). Those become the
        client's errors, refused like any bad value, and the other rows are
        answered. If the model fails on rows it has no reason to, the fault is its
        own (``PredictionFailed``). ``valid``: the indexes of the valid rows (``checked.valid``).
        """
        budget = [MAX_SEARCH_CALLS]
        failing = self._failing(checked.matrix, sorted(flags), budget)
        keep = np.ones(len(valid), dtype=bool)
        keep[failing] = False
        errors = dict(checked.errors)
        for position in failing:
            errors[int(valid[position])] = {
                name: self.model.rules.unscorable[name] for name in flags[position]
            }
        errors = dict(sorted(errors.items()))
        matrix = checked.matrix[keep]
        prediction, seconds = None, 0.0
        if len(matrix):
            started = time.perf_counter()
            try:
                prediction = self.model.predict(matrix)
            except PredictionFailed:
                self._tell(
                    Outcome(
                        self.model, self.request_id, _NONE, None, None, len(checked.errors), len(valid), 0.0
                    )
                )
                raise
            seconds = time.perf_counter() - started
        if not partial:
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, len(checked.valid), 0, 0.0))
            raise rows.refuse(errors)
        kept = np.flatnonzero(keep)
        still = {
            int(np.searchsorted(kept, position)): found for position, found in flags.items() if keep[position]
        }
        self._tell(
            Outcome(
                self.model,
                self.request_id,
                valid[keep] + first if prediction is not None else _NONE,
                matrix if prediction is not None else None,
                prediction,
                len(errors),
                0,
                seconds,
                still,
            )
        )
        warnings = {int(valid[kept[position]]): found for position, found in still.items()}
        return Scored(Checked.partly(len(checked.valid), matrix, errors), prediction, warnings)

    def _failing(self, matrix: np.ndarray, positions: list[int], budget: list[int]) -> list[int]:
        """Which rows of ``matrix`` at ``positions`` the model fails on, found by halving."""
        if not positions:
            return []
        if budget[0] <= 0:
            return positions
        budget[0] -= 1
        try:
            self.model.predict(matrix[positions])
        except PredictionFailed:
            if len(positions) == 1:
                return positions
            middle = len(positions) // 2
            return self._failing(matrix, positions[:middle], budget) + self._failing(
                matrix, positions[middle:], budget
            )
        return []

    def judge_refused(self, rows: Rows) -> Checked:
        """Judge one part of a request already refused: nothing is predicted, and observers count
        every row as refused (as for a part refused strictly); the verdict names the faults."""
        count = len(rows)
        self.rows += count
        checked = rows.check(self.model.rules, strict=False)
        self._tell(Outcome(self.model, self.request_id, _NONE, None, None, count, 0, 0.0))
        return checked

    def close(self) -> None:
        for observer in self._observers:
            observer.finished(self.model, self.rows)

    def __enter__(self) -> PredictionRequest:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _tell(self, outcome: Outcome) -> None:
        if self.client is not None:
            outcome = replace(outcome, client=self.client)
        for observer in self._observers:
            observer.scored(outcome)


_NONE = np.empty(0, dtype=np.intp)
# Model calls spent, at most, finding which flagged rows a model cannot score.
MAX_SEARCH_CALLS = 64


def validated(rules: RuleSet, rows: Rows) -> np.ndarray:
    """The matrix of ``rows``, judged strictly without predicting; raises ``rows.refuse(...)``."""
    checked = rows.check(rules)
    if checked.matrix is None:
        raise rows.refuse(checked.errors)
    return checked.matrix
