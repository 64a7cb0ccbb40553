"""The prediction core: one request's rows, in parts, judged, predicted and reported to observers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.csv_files import scoring as csv_scoring
from service.errors import InvalidInput
from service.models import ModelStore
from service.models.core import Observer, Outcome, PredictionCore
from service.models.json_rows import JsonRows
from service.models.loaded import LoadedModel
from service.models.text_cells import CellRows

SETOSA = [5.1, 3.5, 1.4, 0.2]
HEADER = "id,sepal_length,sepal_width,petal_length,petal_width"


class Recorder(Observer):
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.finished_rows: list[int] = []

    def scored(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def finished(self, model: LoadedModel, rows: int) -> None:
        self.finished_rows.append(rows)


@pytest.fixture(scope="module")
def iris(demo_store_path: Path) -> LoadedModel:
    return ModelStore(demo_store_path).load("iris", "1")


def cells(rows: list[list[str]]) -> CellRows:
    table = np.array(rows, dtype=object)
    return CellRows(table, lines=np.arange(2, 2 + len(rows)), checked=np.arange(len(rows)))


def test_parts_of_one_request_are_numbered_across_the_request(iris: LoadedModel) -> None:
    recorder = Recorder()
    with PredictionCore([recorder]).request(iris, "r1") as scoring:
        first = scoring.score(JsonRows([SETOSA, SETOSA, SETOSA]))
        second = scoring.score(
            cells([["5.1", "3.5", "1.4", "0.2"], ["x", "3.5", "1.4", "0.2"]]), partial=True
        )
    assert len(first.prediction.values) == 3
    assert second.valid.tolist() == [True, False] and list(second.errors) == [1]
    assert second.errors[1] == {"sepal_length": ["Not a valid number."]}
    assert [outcome.rows.tolist() for outcome in recorder.outcomes] == [[0, 1, 2], [3]]
    assert [(outcome.invalid, outcome.failed) for outcome in recorder.outcomes] == [(0, 0), (1, 0)]
    assert all(outcome.request_id == "r1" and outcome.seconds > 0 for outcome in recorder.outcomes)
    assert recorder.finished_rows == [5]


def test_a_strict_part_with_a_bad_row_is_refused_whole(iris: LoadedModel) -> None:
    recorder = Recorder()
    core = PredictionCore([recorder])
    with pytest.raises(InvalidInput) as caught, core.request(iris, "r2") as scoring:
        scoring.score(JsonRows([SETOSA, [5.1, 3.5, 1.4, "wide"]]))
    assert caught.value.errors == {"1": {"petal_width": [caught.value.errors["1"]["petal_width"][0]]}}
    [outcome] = recorder.outcomes
    assert (outcome.invalid, outcome.prediction, outcome.rows.tolist()) == (2, None, [])
    assert recorder.finished_rows == [2]


def test_a_part_with_no_valid_row_predicts_nothing(iris: LoadedModel) -> None:
    recorder = Recorder()
    called: list[int] = []
    with PredictionCore([recorder]).request(iris, "r3") as scoring:
        iris_predict, iris.predict = iris.predict, lambda matrix: called.append(len(matrix))  # type: ignore[method-assign]
        try:
            scored = scoring.score(cells([["", "1", "1", "1"]]), partial=True)
        finally:
            iris.predict = iris_predict  # type: ignore[method-assign]
    assert scored.prediction is None and called == []
    assert recorder.outcomes[0].invalid == 1


def test_csv_audit_lines_carry_each_rows_index_within_the_whole_file(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file scored in chunks of 10: rows of different chunks used to share audit indexes 0-9."""
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 10)
    audit = tmp_path / "audit.jsonl"
    app = make_app(model_store=demo_store_path, prediction_log=audit)
    lines = [HEADER] + [f"{index},5.1,3.5,1.4,0.2" for index in range(25)]
    lines[1 + 13] = "13,5.1,3.5,1.4,oops"  # row 13 (line 15) is invalid
    response = app.test_client().post(
        "/v1/models/iris/predict/csv",
        data="\n".join(lines) + "\n",
        content_type="text/csv",
        headers={"X-Request-ID": "file-1"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_data().count(b"\r\n") == 26  # the streamed answer, read to its end
    app.extensions["service"].audit.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {record["request_id"] for record in records} == {"file-1"}
    rows = [record["row"] for record in records]
    assert sorted(rows) == [index for index in range(25) if index != 13]
    assert len(set(rows)) == len(rows)


def test_the_json_route_and_the_core_give_the_same_answer(
    app: Flask, iris: LoadedModel, demo_store_path: Path
) -> None:
    rows: list[Any] = [SETOSA, [6.7, 3.0, 5.2, 2.3]]
    answer = app.test_client().post("/v1/models/iris/predict", json={"instances": rows}).get_json()
    with PredictionCore().request(iris, "r4") as scoring:
        scored = scoring.score(JsonRows(rows))
    assert answer["predictions"] == scored.prediction.values.tolist()
