"""CSV answers that are safe to open and bounded in size: formulas defused, wide headers refused,
error cells capped. Through Flask's test client; memory is measured on a real server in
tests/test_hardening_gunicorn.py."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from sklearn.linear_model import LogisticRegression

from service.csv_files import scoring as csv_scoring
from service.csv_files.text import defuse
from tests.helpers import store_model

IRIS_HEADER = "id,sepal_length,sepal_width,petal_length,petal_width"
GOOD_ROW = "5.1,3.5,1.4,0.2"
PROBLEM = "application/problem+json"
FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", '=HYPERLINK("http://x")']
NUMBERS = ["-1.5", "+3", "-1e5", "-.5", "2", "-0", "+4.25E-2"]


def post_csv(client: FlaskClient, text: str, name: str = "iris", on_error: str = "row") -> Any:
    return client.post(
        f"/v1/models/{name}/predict/csv?on_error={on_error}", data=text.encode(), content_type="text/csv"
    )


def answer_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    return response.get_json(force=True)


def quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


# --- Formula injection ------------------------------------------------------------------


def needs_quotes(cell: str) -> bool:
    return any(char in cell for char in ',"\r\n')


@pytest.mark.parametrize("quoting", ["plain", "quoted"])
def test_text_cells_that_start_a_formula_get_a_leading_quote(client: FlaskClient, quoting: str) -> None:
    # Unquoted lines take the fast path (one regular expression per chunk), quoted ones the csv module's.
    cells = [
        cell
        for cell in [*FORMULAS, *NUMBERS, "plain", "a=b", "x-y", ""]
        if quoting == "quoted" or not needs_quotes(cell)
    ]
    lines = [f"{IRIS_HEADER},note"]
    for cell in cells:
        text = quoted(cell) if quoting == "quoted" else cell
        lines.append(f"{text},{GOOD_ROW},{text}")
    header, *rows = answer_rows(post_csv(client, "\n".join(lines) + "\n"))
    assert header[:6] == [*IRIS_HEADER.split(","), "note"]
    assert len(rows) == len(cells) > 10
    for cell, row in zip(cells, rows, strict=True):
        expected = "'" + cell if cell in FORMULAS else cell
        assert row[0] == expected and row[5] == expected, (cell, row)
        assert row[6] == "setosa", row


def test_a_formula_in_the_header_is_defused(client: FlaskClient) -> None:
    header, row = answer_rows(post_csv(client, f"=cmd()|x,{IRIS_HEADER[3:]}\n1,{GOOD_ROW}\n"))
    assert header[0] == "'=cmd()|x" and row[0] == "1"


@pytest.fixture
def one_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of one line: every row of a small file in a chunk of its own."""
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 1)


@pytest.mark.usefixtures("one_row_chunks")
def test_rows_with_the_wrong_number_of_cells_are_defused_too(client: FlaskClient) -> None:
    text = f"{IRIS_HEADER}\n0,{GOOD_ROW}\n=1+1,{GOOD_ROW},@extra\n-x\n"
    _, *rows = answer_rows(post_csv(client, text))
    assert rows[1][:5] == ["'=1+1", *GOOD_ROW.split(",")]  # cut to the header's width
    assert rows[2][:5] == ["'-x", "", "", "", ""]  # padded with empty cells
    assert rows[1][-2] == "line 3: The row has 6 cells; the header has 5."
    assert rows[2][-2] == "line 4: The row has 1 cell; the header has 5."


def test_class_labels_that_start_a_formula_are_defused(make_app: Any, tmp_path: Path) -> None:
    labels = np.array(["=1+2", "@x", "-3", "safe"])
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    estimator = LogisticRegression(max_iter=1000).fit(frame, labels[np.arange(40) % 4])
    store_model(tmp_path, estimator, "m", "1", frame)
    client = make_app(model_store=tmp_path).test_client()
    text = "a,b\n" + "\n".join(f"{index},{index % 7}" for index in range(40)) + "\n"
    header, *rows = answer_rows(post_csv(client, text, "m"))
    probability_columns = [name for name in header if name.startswith("probability_")]
    assert probability_columns == ["probability_-3", "probability_=1+2", "probability_@x", "probability_safe"]
    predictions = {row[2] for row in rows}
    assert predictions <= {"'=1+2", "'@x", "-3", "safe"} and len(predictions) > 1
    assert not any(cell.startswith(("=", "@", "+")) for row in rows for cell in row)


@pytest.mark.parametrize("cell", FORMULAS)
def test_defuse_prefixes_formulas(cell: str) -> None:
    assert defuse(cell) == "'" + cell


@pytest.mark.parametrize("cell", [*NUMBERS, "", "text", "a=1", " =1", "'=1", "1-2"])
def test_defuse_leaves_numbers_and_plain_text(cell: str) -> None:
    assert defuse(cell) == cell


@pytest.mark.parametrize("cell", ["-", "+", "-inf", "-nan", "+infinity", "-1.5x", "-0x10", "- 1", "--1"])
def test_defuse_treats_what_is_not_a_decimal_number_as_text(cell: str) -> None:
    assert defuse(cell) == "'" + cell


# --- Wide headers ------------------------------------------------------------------------


def test_a_header_wider_than_the_limit_is_a_413(make_app: Any, demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_csv_columns=10).test_client()
    extra = ",".join(f"c{index}" for index in range(6))
    body = problem(post_csv(client, f"{IRIS_HEADER},{extra}\n" + f"1,{GOOD_ROW}\n"), 413)
    assert body["type"] == "/problems/too-many-columns"
    assert body["detail"] == "The file's header has 11 columns; at most 10 are accepted."
    answer_rows(post_csv(client, f"{IRIS_HEADER},{extra[:-3]}\n1,{GOOD_ROW},1,2,3,4,5\n"))  # 10: fine


@pytest.mark.usefixtures("one_row_chunks")
def test_the_default_limit_is_a_thousand_columns(client: FlaskClient) -> None:
    body = problem(post_csv(client, IRIS_HEADER + ",x" * 996 + "\n1\n"), 413)
    assert "1001 columns; at most 1000" in body["detail"]
    good = f"1,{GOOD_ROW}" + ",a" * 995
    header, *rows = answer_rows(post_csv(client, IRIS_HEADER + ",x" * 995 + f"\n{good}\n2\n"))
    assert len(header) == 1000 + 6 and all(len(row) == len(header) for row in rows)
    assert rows[0][1000] == "setosa" and rows[0][-2] == ""
    assert rows[1][:2] == ["2", ""] and rows[1][-2] == "line 3: The row has 1 cell; the header has 1000."


def test_ragged_rows_under_a_wide_header_are_answered_up_to_a_limit(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 100)
    width = 900
    header = IRIS_HEADER + "".join(f",x{index}" for index in range(width - 5))
    good = f"0,{GOOD_ROW}" + ",a" * (width - 5)
    response = post_csv(client, f"{header}\n" + f"{good}\n" * 100 + "1\n" * csv_scoring.MAX_RAGGED_ROWS)
    assert response.status_code == 200, response.get_data(as_text=True)
    lines = response.get_data(as_text=True).split("\r\n")
    assert len(lines) == 1 + 100 + csv_scoring.MAX_RAGGED_ROWS + 1 and lines[-1] == ""
    assert all(",setosa," in line for line in lines[1:101])
    error = f"The row has 1 cell; the header has {width}."
    # 1 cell padded to the header's width, then 4 empty outputs (prediction, probabilities), the
    # error, no warnings.
    assert lines[101] == "1" + "," * (width - 1) + ",,,,," + f"line 102: {error},"
    assert all(line.endswith(f"{error},") for line in lines[101:-1])

    # One more: the file cannot be read as this CSV. The answer, begun with the first chunk, ends
    # with a row that says so; with on_error=fail it is a 422.
    one_more = f"{header}\n" + f"{good}\n" * 100 + "1\n" * (csv_scoring.MAX_RAGGED_ROWS + 1)
    lines = answer_rows(post_csv(client, one_more))
    assert len(lines) == 1 + 100 + csv_scoring.MAX_RAGGED_ROWS + 1  # each chunk of 100 lines until the limit
    assert [row[0] for row in lines[1:101]] == ["0"] * 100
    assert all(row[-2].endswith(error) for row in lines[101:-1])
    stop = lines[-1][-2]
    assert stop.startswith(
        "line 1102: Scoring stopped: More than 1000 rows have another number of cells than the header's "
        f"{width}"
    )
    assert stop.endswith("The rows from line 1102 on are not in this answer.")
    body = problem(post_csv(client, one_more, "iris", "fail"), 422)
    assert body["detail"].startswith("More than 1000 rows have another number of cells than the header's 900")
    assert list(body["errors"]) == ["line 102"]


# --- Error cells are capped -------------------------------------------------------------


def test_an_error_cell_names_at_most_a_hundred_fields(make_app: Any, tmp_path: Path) -> None:
    features = [f"f{index}" for index in range(150)]
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 150)), columns=features)
    store_model(tmp_path, LogisticRegression().fit(frame, np.arange(60) % 2), "wide", "1", frame)
    client = make_app(model_store=tmp_path).test_client()
    good = ",".join("0" for _ in features)
    bad = ",".join("x" for _ in features)
    text = ",".join(features) + "\n" + f"{good}\n" + f"{bad}\n"
    body = problem(post_csv(client, text, "wide", "fail"), 422)
    assert len(body["errors"]["line 3"]) == 100 and body["errors_omitted"] == 50
    *_, last = answer_rows(post_csv(client, text, "wide"))
    error = last[-2]
    assert error.startswith("line 3: f0: Not a valid number.; f1: ")
    assert error.count("Not a valid number.") == 100 and error.endswith("; and 50 more fields")
