"""Micro-batching in the prediction core, with Python threads: who shares a model call, and what each gets.

Each scenario holds the model's first call at a gate while the other requests
queue behind it, then opens the gate: the queued requests must be answered by
one gathered call, each with exactly its own rows, as if it had been alone.
The same behaviour under real Gunicorn workers is in test_batching_gunicorn.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor

from service.errors import InvalidInput, PredictionFailed
from service.models import ModelStore
from service.models.batching import Batching
from service.models.core import Observer, Outcome, PredictionCore, Scored
from service.models.json_rows import JsonRows
from service.models.loaded import LoadedModel, Prediction
from tests.estimators import PickyRegressor
from tests.helpers import MIXED_COLOURS, MIXED_MODEL, random_rows, store_model, time_limit

SETTLE_SECONDS = 20.0  # a bound for threads to reach the queue, never a measured time


class Gated(LoadedModel):
    """A model whose calls wait until the test opens its gate; it notes each call's rows."""

    gate: threading.Event
    calls: list[int]

    def predict(self, matrix: Any) -> Prediction:
        self.calls.append(len(matrix))
        assert self.gate.wait(SETTLE_SECONDS), "the test never opened the gate"
        return super().predict(matrix)


def gated(model: LoadedModel) -> Gated:
    copy = Gated(manifest=model.manifest, estimator=model.estimator, range_policy=model.range_policy)
    copy.gate, copy.calls = threading.Event(), []
    copy.gate.set()
    return copy


class Recorder(Observer):
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.batches: list[tuple[str, int, int]] = []  # (version, rows, requests) per gathered call
        self._lock = threading.Lock()

    def scored(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def batched(self, model: LoadedModel, rows: int, requests: int) -> None:
        with self._lock:
            self.batches.append((model.version, rows, requests))


def score(core: PredictionCore, model: LoadedModel, rows: list[Any] | HeldRows) -> Scored:
    with core.request(model, "r") as scoring:
        return scoring.score(rows if isinstance(rows, HeldRows) else JsonRows(rows))


class HeldRows:
    """JSON rows whose judging waits until the test releases them: a request still being validated."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = JsonRows(rows)
        self.judging, self.release = threading.Event(), threading.Event()

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, rules: Any, *, strict: bool = True) -> Any:
        self.judging.set()
        assert self.release.wait(SETTLE_SECONDS), "the test never released the rows"
        return self.rows.check(rules, strict=strict)

    def refuse(self, errors: Any) -> InvalidInput:
        return self.rows.refuse(errors)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the requests never settled"
        time.sleep(0.001)


def results(futures: list[Future[Scored]]) -> list[Scored | BaseException]:
    return [future.exception() or future.result() for future in futures]


def held_then_gathered(
    core: PredictionCore, model: Gated, first: list[Any], queued: list[list[Any]]
) -> list[Scored | BaseException]:
    """``first`` holds the model (its call waits at the gate) while ``queued`` arrive; then all run."""
    batcher = core.batcher(model)
    assert batcher is not None
    model.gate.clear()
    calls = len(model.calls)
    with ThreadPoolExecutor(len(queued) + 1) as pool:
        leader = pool.submit(score, core, model, first)
        wait_until(lambda: len(model.calls) > calls)
        followers = [pool.submit(score, core, model, rows) for rows in queued]

        # Every follower is queued, done (refused before it could queue) or calling the model alone.
        def settled() -> bool:
            alone = len(model.calls) - calls - 1
            return batcher.waiting + sum(future.done() for future in followers) + alone == len(followers)

        wait_until(settled)
        model.gate.set()
        return results([leader, *followers])


@pytest.fixture(scope="module")
def store(demo_store_path: Path) -> ModelStore:
    return ModelStore(demo_store_path)


def batching_core(recorder: Recorder, **settings: Any) -> PredictionCore:
    return PredictionCore([recorder], Batching(**{"max_rows": 256, "max_wait": 0.002, **settings}))


def distinct_rows(model: LoadedModel, count: int, seed: int = 1) -> list[dict[str, Any]]:
    return random_rows(model.manifest.features, random.Random(seed), count)


def assert_same_prediction(got: Prediction, alone: Prediction) -> None:
    """Labels and numbers equal; probabilities of a linear model may differ in the last bits
    (a matrix product sums in another order over several rows than over one)."""
    assert got.values.tolist() == alone.values.tolist()
    assert (got.probabilities is None) == (alone.probabilities is None)
    if alone.probabilities is not None:
        np.testing.assert_allclose(got.probabilities, alone.probabilities, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", "iris"])
def test_queued_requests_share_one_call_and_each_gets_its_own_rows(store: ModelStore, name: str) -> None:
    model = gated(store.load(name, "1"))
    recorder = Recorder()
    rows = distinct_rows(model, 12)
    answers = held_then_gathered(batching_core(recorder), model, [rows[0]], [[row] for row in rows[1:]])
    for row, answer in zip(rows, answers, strict=True):
        assert isinstance(answer, Scored)
        assert_same_prediction(answer.prediction, model.predict(JsonRows([row]).check(model.rules).matrix))
    assert recorder.batches == [("1", 1, 1), ("1", 11, 11)]
    # Each request's outcome holds its own row, the seconds of the call it shared, and its wait.
    outcomes = recorder.outcomes
    assert sorted(len(outcome.rows) for outcome in outcomes) == [1] * 12
    assert all(outcome.waited is not None and outcome.waited >= 0 for outcome in outcomes)
    assert len({outcome.seconds for outcome in outcomes[1:]}) <= 2


def test_requests_of_several_rows_and_mixed_types_are_sliced_back_in_order(mixed_store_path: Path) -> None:
    model = gated(ModelStore(mixed_store_path).load(MIXED_MODEL, "1"))
    recorder = Recorder()
    rng = random.Random(4)

    def row() -> dict[str, Any]:
        return {
            "size": round(rng.uniform(0, 10), 3),
            "count": rng.randrange(21),
            "flag": rng.random() < 0.5,
            "colour": rng.choice(MIXED_COLOURS),
        }

    bodies = [[row() for _ in range(count)] for count in (1, 3, 1, 2, 5, 1)]
    answers = held_then_gathered(batching_core(recorder), model, bodies[0], bodies[1:])
    for body, answer in zip(bodies, answers, strict=True):
        assert isinstance(answer, Scored)
        assert_same_prediction(answer.prediction, model.predict(JsonRows(body).check(model.rules).matrix))
    assert recorder.batches == [("1", 1, 1), ("1", 12, 5)]


def test_a_bad_row_fails_only_its_own_request(store: ModelStore) -> None:
    model = gated(store.load("iris", "1"))
    recorder = Recorder()
    good = distinct_rows(model, 4)
    bad = {**good[0], "petal_width": "wide"}
    answers = held_then_gathered(
        batching_core(recorder), model, [good[0]], [[good[1]], [bad], [good[2]], [good[3]]]
    )
    assert isinstance(answers[2], InvalidInput)
    assert [isinstance(answer, Scored) for answer in answers] == [True, True, False, True, True]
    assert recorder.batches == [("1", 1, 1), ("1", 3, 3)]


@pytest.fixture(scope="module")
def picky(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Predicts the sum of x and y (0 to 20 each in training); a call with x == 13 fails."""
    root = tmp_path_factory.mktemp("picky")
    frame = pd.DataFrame({"x": np.linspace(0, 20, 41), "y": np.linspace(20, 0, 41)})
    store_model(root, PickyRegressor().fit(frame, np.zeros(41)), "picky", "1", sample=frame)
    return ModelStore(root).load("picky", "1")


def test_a_model_error_fails_only_the_request_it_comes_from(picky: LoadedModel) -> None:
    model = gated(picky)
    recorder = Recorder()
    queued = [[[1.0, 2.0]], [[13.0, 1.0]], [[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0]]]
    answers = held_then_gathered(batching_core(recorder), model, [[0.5, 0.5]], queued)
    assert isinstance(answers[2], PredictionFailed)
    sums = [answer.prediction.values.tolist() for answer in answers if isinstance(answer, Scored)]
    assert sums == [[1.0], [3.0], [7.0, 11.0], [15.0]]
    # The gathered call failed; each of its requests then predicted its own rows alone.
    assert recorder.batches == [("1", 1, 1), ("1", 5, 4)]
    assert model.calls[:2] == [1, 5] and sorted(model.calls[2:]) == [1, 1, 1, 2]
    assert sorted(outcome.failed for outcome in recorder.outcomes) == [0, 0, 0, 0, 1]


def test_a_flagged_value_the_model_cannot_score_is_refused_in_its_own_request(picky: LoadedModel) -> None:
    # 13 lies inside the training range here but y = 30 does not: the row is flagged, so the
    # core's search for unscorable flagged rows runs for that request alone and refuses the row.
    model = gated(picky)
    answers = held_then_gathered(
        batching_core(Recorder()), model, [[0.5, 0.5]], [[[1.0, 2.0]], [[13.0, 30.0]], [[3.0, 4.0]]]
    )
    refused = answers[2]
    assert isinstance(refused, InvalidInput)
    assert "could not score" in str(refused.errors)
    assert [answer.prediction.values.tolist() for answer in (answers[0], answers[1], answers[3])] == [
        [1.0],
        [3.0],
        [7.0],
    ]


def test_requests_on_two_versions_never_share_a_call(tmp_path: Path) -> None:
    # Version 1 adds x and y; version 2 always answers -1: a request answered by the other
    # version's call would get the other version's answer.
    frame = pd.DataFrame({"x": np.linspace(0, 20, 41), "y": np.linspace(20, 0, 41)})
    store_model(tmp_path, PickyRegressor().fit(frame, np.zeros(41)), "adder", "1", sample=frame)
    constant = DummyRegressor(strategy="constant", constant=-1.0).fit(frame, np.zeros(41))
    store_model(tmp_path, constant, "adder", "2", sample=frame)
    old, new = (gated(ModelStore(tmp_path).load("adder", version)) for version in ("1", "2"))
    recorder = Recorder()
    core = batching_core(recorder)
    rows = [[float(index), 1.0] for index in range(6)]
    old.gate.clear()
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(score, core, old, [rows[0]])
        wait_until(lambda: bool(old.calls))
        # The served version changes while requests on the old one wait: each keeps its snapshot.
        waiting_old = [pool.submit(score, core, old, [row]) for row in rows[1:]]
        on_new = [pool.submit(score, core, new, [row]) for row in rows]
        old_batcher = core.batcher(old)
        assert old_batcher is not None
        wait_until(lambda: old_batcher.waiting == len(waiting_old) and all(f.done() for f in on_new))
        old.gate.set()
        old_answers, new_answers = results([first, *waiting_old]), results(on_new)
    assert [answer.prediction.values.tolist() for answer in old_answers] == [[x + y] for x, y in rows]
    assert [answer.prediction.values.tolist() for answer in new_answers] == [[-1.0]] * 6
    assert [batch for batch in recorder.batches if batch[0] == "1"] == [("1", 1, 1), ("1", 5, 5)]
    assert sum(rows for version, rows, _ in recorder.batches if version == "2") == 6


def test_a_request_with_more_rows_than_the_limit_calls_the_model_alone(store: ModelStore) -> None:
    model = gated(store.load("iris", "1"))
    recorder = Recorder()
    rows = distinct_rows(model, 5)
    answers = held_then_gathered(
        batching_core(recorder, max_rows=4), model, rows[:1], [rows[:2], rows, rows[2:4]]
    )
    assert [len(answer.prediction.values) for answer in answers] == [1, 2, 5, 2]
    # The 5-row request went alone, outside the queue; the others were gathered.
    assert recorder.batches == [("1", 1, 1), ("1", 4, 2)]
    assert sorted(model.calls) == [1, 4, 5]


def test_a_lone_request_on_an_idle_model_does_not_wait(store: ModelStore) -> None:
    # A minute of allowed waiting: a lone request that waited for company would fail the limit.
    recorder = Recorder()
    core = batching_core(recorder, max_wait=60.0)
    model = store.load("iris", "1")
    with time_limit(10):
        for row in distinct_rows(model, 3):
            score(core, model, [row])
    assert recorder.batches == [("1", 1, 1)] * 3


def test_without_batching_every_request_calls_the_model_itself(store: ModelStore) -> None:
    recorder = Recorder()
    core = PredictionCore([recorder])
    model = gated(store.load("iris", "1"))
    assert core.batcher(model) is None
    rows = distinct_rows(model, 8)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda row: score(core, model, [row]), rows))
    assert sorted(model.calls) == [1] * 8 and recorder.batches == []
    assert all(outcome.waited is None for outcome in recorder.outcomes)
    assert [answer.prediction.values[0] for answer in answers] == [
        model.predict(JsonRows([row]).check(model.rules).matrix).values[0] for row in rows
    ]


@pytest.mark.parametrize("valid", [True, False], ids=["joins", "refused"])
def test_a_gathered_call_waits_for_a_request_still_being_validated(store: ModelStore, valid: bool) -> None:
    # A minute of allowed waiting: the call waits for the request being judged, and no longer than
    # it takes to join the queue, or to be refused (then the call goes without it at once).
    model = gated(store.load("iris", "1"))
    recorder = Recorder()
    core = batching_core(recorder, max_wait=60.0)
    batcher = core.batcher(model)
    assert batcher is not None
    first, queued, late = distinct_rows(model, 3)
    held = HeldRows([late if valid else {**late, "petal_width": "wide"}])
    model.gate.clear()
    with time_limit(30), ThreadPoolExecutor(3) as pool:
        leader = pool.submit(score, core, model, [first])
        wait_until(lambda: bool(model.calls))
        follower = pool.submit(score, core, model, [queued])
        wait_until(lambda: batcher.waiting == 1)
        judged = pool.submit(score, core, model, held)
        wait_until(held.judging.is_set)
        model.gate.set()  # the first call ends; the queued request leads the next, and waits
        wait_until(leader.done)
        # Whatever this pause, a correct batcher passes; without the wait, the next call would
        # leave without the request being judged, and the pause lets it.
        time.sleep(0.2)
        held.release.set()
        answers = results([leader, follower, judged])
    assert isinstance(answers[1], Scored)
    if valid:
        assert isinstance(answers[2], Scored)
        assert recorder.batches == [("1", 1, 1), ("1", 2, 2)]
    else:
        assert isinstance(answers[2], InvalidInput)
        assert recorder.batches == [("1", 1, 1), ("1", 1, 1)]
