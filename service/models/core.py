"""The prediction core: what every front end calls, however its rows arrived.

A front end (v1 JSON, CSV files, later the V2 protocol and gRPC) parses its
input into ``Rows`` and renders what comes back; between the two, this core
does the same steps for all of them:

1. judge the rows with the model's rule set (``Rows.check``);
2. refuse the request (strict) or set the bad rows aside (partial);
3. predict the valid rows in one vectorised call;
4. tell the observers (metrics, the audit log) what happened, each predicted
   row by its index within the whole request.

A request may hand its rows over in several parts (a CSV file, chunk by chunk):
``PredictionRequest`` numbers them across parts. The core knows no HTTP and no
Flask: the app wires the observers in, and turns the typed errors it raises
(``InvalidInput``, ``PredictionFailed``) into answers in one place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import numpy as np

from service.errors import InvalidInput, PredictionFailed
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
    seconds: float  # the model call alone


class Observer:
    """Told what the core did; the app wires observers in (metrics, the audit log)."""

    def scored(self, outcome: Outcome) -> None:
        """One part of a request was judged (and, if any row passed, predicted)."""

    def finished(self, model: LoadedModel, rows: int) -> None:
        """A request is over; ``rows``: every row it handed to the core."""


@dataclass(frozen=True)
class Scored:
    """The answer for one part of a request: the prediction of its valid rows, the others' faults."""

    checked: Checked
    prediction: Prediction | None  # for the rows where ``checked.valid``, in order; None if none is

    @property
    def valid(self) -> np.ndarray:
        return self.checked.valid

    @property
    def errors(self) -> RowErrors:
        return self.checked.errors


class PredictionCore:
    """Judges, predicts and reports; one per app, shared by every front end."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers = tuple(observers)

    def request(self, model: LoadedModel, request_id: str) -> PredictionRequest:
        """Start a request on ``model`` (one snapshot, used for all its parts)."""
        return PredictionRequest(self, model, request_id)


class PredictionRequest:
    """One request's rows, in one or more parts; use it as a context manager."""

    def __init__(self, core: PredictionCore, model: LoadedModel, request_id: str) -> None:
        self._observers = core.observers
        self.model = model
        self.request_id = request_id
        self.rows = 0  # handed over so far: the index of the next part's first row

    def score(self, rows: Rows, *, partial: bool = False) -> Scored:
        """Judge and predict one part of the request.

        Strict (the default): one bad row refuses the part with ``rows.refuse``,
        nothing is predicted. ``partial``: the valid rows are predicted, the
        others come back with their faults.
        """
        first, count = self.rows, len(rows)
        self.rows += count
        checked = rows.check(self.model.rules, strict=not partial)
        if checked.matrix is None:
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, count, 0, 0.0))
            raise rows.refuse(checked.errors)
        invalid = len(checked.errors)
        predicted = np.flatnonzero(checked.valid) + first
        if not len(predicted):
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, invalid, 0, 0.0))
            return Scored(checked, None)
        started = time.perf_counter()
        try:
            prediction = self.model.predict(checked.matrix)
        except PredictionFailed:
            self._tell(Outcome(self.model, self.request_id, _NONE, None, None, invalid, len(predicted), 0.0))
            raise
        seconds = time.perf_counter() - started
        self._tell(
            Outcome(self.model, self.request_id, predicted, checked.matrix, prediction, invalid, 0, seconds)
        )
        return Scored(checked, prediction)

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
        for observer in self._observers:
            observer.scored(outcome)


_NONE = np.empty(0, dtype=np.intp)


def validated(rules: RuleSet, rows: Rows) -> np.ndarray:
    """The matrix of ``rows``, judged strictly without predicting; raises ``rows.refuse(...)``."""
    checked = rows.check(rules)
    if checked.matrix is None:
        raise rows.refuse(checked.errors)
    return checked.matrix
