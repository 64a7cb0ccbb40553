"""Micro-batching under real Gunicorn: concurrent clients, each answered with its own rows.

Two servers over one store, batching on (the defaults) and off: 32 clients
send distinct single rows at once, and every answer from the batching server
must be the one the other server gives. The batch size histogram must show
that calls of several rows were really made (else these tests would pass with
a batcher that does nothing), and the server without batching must make none.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.estimators import PickyRegressor
from tests.helpers import MIXED_COLOURS, MIXED_MODEL, store_mixed_model, store_model, stored_model_rows
from tests.observed import Metrics
from tests.servers import Server, http, launch, post_json, running_server, wait_until_answering

CLIENTS = 32
SLOW_CALL = 0.5  # seconds per call of the "slow" model: long enough to gather every request behind it


@pytest.fixture(scope="module")
def store(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, the mixed-type pipeline, and two PickyRegressors (x + y; a call with x == 13
    fails): "picky" takes 20 ms a call, "slow" half a second."""
    root = tmp_path_factory.mktemp("batching") / "store"
    shutil.copytree(demo_store_path, root)
    store_mixed_model(root)
    frame = pd.DataFrame({"x": np.linspace(0, 20, 41), "y": np.linspace(20, 0, 41)})
    for name, delay in (("picky", 0.02), ("slow", SLOW_CALL)):
        store_model(root, PickyRegressor(delay=delay).fit(frame, np.zeros(41)), name, "1", sample=frame)
    return root


@pytest.fixture(scope="module")
def batching(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(store, tmp_path_factory.mktemp("batching_on")) as server:
        yield server


@pytest.fixture(scope="module")
def unbatched(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(store, tmp_path_factory.mktemp("batching_off"), SERVICE_BATCHING="off") as server:
        yield server


def concurrently(server: Server, name: str, rows: list[Any]) -> list[requests.Response]:
    """Each row in a request of its own, from CLIENTS threads at once, answers in row order."""
    path = f"/v1/models/{name}/predict"
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda row: post_json(server, path, {"features": row}), rows))


def mixed_rows(count: int) -> list[dict[str, Any]]:
    rng = random.Random(8)
    return [
        {
            "size": round(rng.uniform(0, 10), 4),
            "count": rng.randrange(21),
            "flag": rng.random() < 0.5,
            "colour": rng.choice(MIXED_COLOURS),
        }
        for _ in range(count)
    ]


def batches(server: Server, name: str) -> tuple[float, float]:
    """(model calls the batcher made for ``name``, those of more than one row)."""
    scraped = Metrics(http("GET", server.url("/metrics")).text)
    calls = scraped.value("batch_rows_count", model=name)
    single = dict(scraped.buckets("batch_rows", model=name)).get(1.0, 0.0)
    return calls, calls - single


def assert_same_answer(got: dict[str, Any], alone: dict[str, Any]) -> None:
    """The same answer; probabilities of a linear model may differ in the last bits (a matrix
    product sums in another order over several rows than over one)."""
    assert got.keys() == alone.keys() and got["prediction"] == alone["prediction"]
    assert (got["model"], got["model_version"]) == (alone["model"], alone["model_version"])
    if "probabilities" in alone:
        assert got["probabilities"].keys() == alone["probabilities"].keys()
        for label, probability in alone["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(probability, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", MIXED_MODEL])
def test_concurrent_clients_each_get_exactly_the_unbatched_answer(
    batching: Server, unbatched: Server, store: Path, name: str
) -> None:
    count = 4 * CLIENTS
    rows = (
        mixed_rows(count) if name == MIXED_MODEL else stored_model_rows(store, name, random.Random(5), count)
    )
    before = batches(batching, name)
    got, alone = concurrently(batching, name, rows), concurrently(unbatched, name, rows)
    assert [response.status_code for response in got] == [200] * count
    assert [response.status_code for response in alone] == [200] * count
    for mine, reference in zip(got, alone, strict=True):
        if name == MIXED_MODEL:
            assert_same_answer(mine.json(), reference.json())
        else:  # forests and boosted trees score each row on its own: the very same bits
            assert mine.json() == reference.json()
    calls, gathered = (after - start for after, start in zip(batches(batching, name), before, strict=True))
    assert calls >= 1
    if name == "breast_cancer":  # 200 trees, milliseconds a call: requests queue behind each call
        assert gathered >= 1, "no model call of several rows was made under 32 concurrent clients"


def test_a_bad_row_fails_only_its_own_request_under_load(batching: Server, store: Path) -> None:
    rows = stored_model_rows(store, "breast_cancer", random.Random(6), 3 * CLIENTS)
    bad = set(range(0, len(rows), 7))
    for index in bad:
        rows[index] = {**rows[index], "mean_radius": "wide"}
    before = batches(batching, "breast_cancer")
    answers = concurrently(batching, "breast_cancer", rows)
    for index, response in enumerate(answers):
        if index in bad:
            assert response.status_code == 422
            assert response.json()["errors"] == {"mean_radius": ["Not a valid number."]}
        else:
            assert response.status_code == 200 and response.json()["prediction"] in ("malignant", "benign")
    assert batches(batching, "breast_cancer")[1] > before[1]


def test_a_model_error_fails_only_the_requests_it_comes_from(batching: Server) -> None:
    rows = [{"x": float(index % 20), "y": 1.0} for index in range(3 * CLIENTS)]
    before = batches(batching, "picky")
    answers = concurrently(batching, "picky", rows)
    for row, response in zip(rows, answers, strict=True):
        if row["x"] == 13:
            assert response.status_code == 500
            assert response.json()["type"] == "/problems/prediction-failed"
        else:
            assert response.status_code == 200, response.text
            assert response.json()["prediction"] == row["x"] + row["y"]
    # Calls of several rows were made, some with a 13 among them, and failed only its request.
    assert batches(batching, "picky")[1] > before[1]


def test_without_batching_no_model_call_is_shared(unbatched: Server, store: Path) -> None:
    concurrently(
        unbatched, "breast_cancer", stored_model_rows(store, "breast_cancer", random.Random(7), CLIENTS)
    )
    scraped = Metrics(http("GET", unbatched.url("/metrics")).text)
    assert scraped.value("batch_rows_count") == 0
    assert scraped.value("predictions_total", model="breast_cancer", outcome="success") >= CLIENTS


def test_a_stopping_worker_answers_every_gathered_request(store: Path, tmp_path: Path) -> None:
    server = launch(store, tmp_path / "logs", SERVICE_WORKERS="1", SERVICE_GRACEFUL_TIMEOUT="30")
    try:
        wait_until_answering(server)
        rows = [{"x": float(index), "y": 0.5} for index in range(12)]
        with ThreadPoolExecutor(len(rows)) as pool:
            answers = pool.submit(concurrently, server, "slow", rows)
            # Every request is in the worker: one in the first call, the others queued behind it.
            deadline = time.monotonic() + 20
            while Metrics(http("GET", server.url("/metrics")).text).value("http_requests_in_flight") < 13:
                assert time.monotonic() < deadline, "the requests never reached the worker"
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            responses = answers.result()
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
    assert [response.status_code for response in responses] == [200] * len(rows)
    assert [response.json()["prediction"] for response in responses] == [row["x"] + 0.5 for row in rows]
