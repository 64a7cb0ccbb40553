"""Every estimator shape served at once by the real Gunicorn, from one store.

The models load in the master and the workers fork from it: an estimator whose
native thread pool (OpenMP for k-means, BLAS for the linear models) started
before the fork could hang a worker on its first prediction. Each shape is asked
several times, each time on a fresh connection so that both workers answer, and
every request is bounded by REQUEST_TIMEOUT: a hung worker fails the test.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest

from tests.servers import Server, http, media_type, post_json
from tests.shapes import every_shape, serving

pytestmark = pytest.mark.integration

SHAPES = {shape.name: shape for shape in every_shape()}
ROUNDS = 4  # requests per shape and route


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(SHAPES.values(), tmp_path_factory) as running:
        yield running


def test_every_shape_is_ready(server: Server) -> None:
    ready = http("GET", server.url("/ready")).json()
    assert {name: model["task"] for name, model in ready["models"].items()} == {
        name: shape.task for name, shape in SHAPES.items()
    }


@pytest.mark.parametrize("name", SHAPES)
def test_each_shape_answers_over_json_and_csv(server: Server, name: str) -> None:
    shape = SHAPES[name]
    rows = shape.rows()
    expected = {"model": name, "model_version": "1", **shape.expected(rows)}
    csv_text = shape.csv_text(rows)
    for _ in range(ROUNDS):
        response = post_json(server, f"/v1/models/{name}/predict/batch", rows)
        assert response.status_code == 200, response.text
        assert response.json() == expected
        answer = http(
            "POST",
            server.url(f"/v1/models/{name}/predict/csv"),
            data=csv_text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert answer.status_code == 200, answer.text
        assert media_type(answer) == "text/csv"
        assert list(csv.reader(io.StringIO(answer.text, newline=""))) == shape.expected_csv(rows)


def test_no_worker_hung_or_was_replaced(server: Server) -> None:
    """After every shape has answered, both workers took predictions, and none was ever replaced."""
    booted = {
        record["pid"]
        for record in server.log_records()
        if str(record.get("message", "")).startswith("Booting worker with pid")
    }
    assert len(booted) == 2
    assert set(server.worker_pids()) == booted
    answered = {record["pid"] for record in server.access_log() if record.get("model") in SHAPES}
    assert answered == booted
