"""CSV file scoring (POST /v1/models/NAME/predict/csv) through Flask's test client."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn import datasets

from service.app import create_app
from service.config import Settings
from service.csv_files import reading as csv_reading
from service.csv_files import scoring as csv_scoring
from tests.estimators import ExplodingRegressor
from tests.helpers import store_model

PROBLEM = "application/problem+json"
IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_HEADER = "id,sepal_length,sepal_width,petal_length,petal_width"
IRIS_OUTPUT = [
    "prediction",
    "probability_setosa",
    "probability_versicolor",
    "probability_virginica",
    "error",
    "warnings",
]
GOOD_ROW = "5.1,3.5,1.4,0.2"


# --- Helpers ----------------------------------------------------------------------


def csv_path(name: str = "iris", on_error: str | None = None) -> str:
    return f"/v1/models/{name}/predict/csv" + (f"?on_error={on_error}" if on_error else "")


def post_csv(
    client: FlaskClient, text: str | bytes, name: str = "iris", on_error: str | None = None, **kwargs: Any
) -> Any:
    data = text.encode("utf-8") if isinstance(text, str) else text
    kwargs.setdefault("content_type", "text/csv")
    return client.post(csv_path(name, on_error), data=data, **kwargs)


def post_chunked(client: FlaskClient, data: bytes, name: str = "iris", on_error: str | None = None) -> Any:
    """A body without Content-Length, as a WSGI server hands over a chunked upload."""
    return client.post(
        csv_path(name, on_error),
        input_stream=io.BytesIO(data),
        headers={"Content-Type": "text/csv", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def answer_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))


def answer_records(response: Any) -> list[dict[str, str]]:
    header, *rows = answer_rows(response)
    return [dict(zip(header, row, strict=True)) for row in rows]


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def iris_file(rows: int, bad: dict[int, str] | None = None, line_break: str = "\n") -> str:
    """``rows`` good iris rows after the header; ``bad`` replaces the row on a line (header is line 1)."""
    lines = [IRIS_HEADER] + [f"{index},{GOOD_ROW}" for index in range(rows)]
    for line, text in (bad or {}).items():
        lines[line - 1] = text
    return line_break.join(lines) + line_break


def json_batch(client: FlaskClient, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{name}/predict/batch", json={"instances": rows})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 10 lines, so that files of a few dozen rows have several."""
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 10)
    return 10


# --- Correct answers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_frame() -> pd.DataFrame:
    """200 iris rows in shuffled order and columns, with an extra id column."""
    data = datasets.load_iris(as_frame=True).data.set_axis(list(IRIS), axis=1)
    rng = np.random.default_rng(7)
    frame = data.iloc[rng.choice(len(data), size=200, replace=True)].reset_index(drop=True)
    frame.insert(0, "id", [f"row-{index}" for index in range(200)])
    return frame[["petal_width", "id", "sepal_length", "petal_length", "sepal_width"]]


def frame_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def test_iris_file_matches_the_json_api(client: FlaskClient, iris_frame: pd.DataFrame) -> None:
    response = post_csv(client, frame_csv(iris_frame))
    assert response.headers["Content-Disposition"] == 'attachment; filename="iris-predictions.csv"'
    header, *rows = answer_rows(response)
    assert header == [*iris_frame.columns, *IRIS_OUTPUT]
    assert len(rows) == 200
    expected = json_batch(client, "iris", iris_frame[list(IRIS)].to_dict(orient="records"))
    records = iris_frame.astype(str).to_dict(orient="records")
    for row, record, prediction, probabilities in zip(
        rows, records, expected["predictions"], expected["probabilities"], strict=True
    ):
        answer = dict(zip(header, row, strict=True))
        assert {column: answer[column] for column in iris_frame.columns} == record  # inputs as sent, id kept
        assert answer["prediction"] == prediction
        assert {label: float(answer[f"probability_{label}"]) for label in probabilities} == probabilities
        assert answer["error"] == ""


def test_multipart_upload_gives_the_same_answer(client: FlaskClient, iris_frame: pd.DataFrame) -> None:
    text = frame_csv(iris_frame)
    plain = post_csv(client, text)
    form = client.post(
        csv_path(),
        data={"note": "before the file", "file": (io.BytesIO(text.encode()), "flowers.csv"), "after": "x"},
        content_type="multipart/form-data",
    )
    assert form.status_code == 200
    assert form.get_data() == plain.get_data()


def test_chunked_upload_gives_the_same_answer(client: FlaskClient, iris_frame: pd.DataFrame) -> None:
    data = frame_csv(iris_frame).encode()
    assert post_chunked(client, data).get_data() == post_csv(client, data).get_data()


def test_regressor_has_no_probability_columns(client: FlaskClient) -> None:
    bunch = datasets.load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.astype({"age": "int64", "sex": "int64"}).head(50)
    answer = answer_records(post_csv(client, frame.to_csv(index=False), name="diabetes"))
    assert list(answer[0]) == [*frame.columns, "prediction", "error", "warnings"]
    expected = json_batch(client, "diabetes", frame.to_dict(orient="records"))["predictions"]
    assert [float(record["prediction"]) for record in answer] == expected


def test_breast_cancer_file(client: FlaskClient) -> None:
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.data.set_axis([c.replace(" ", "_") for c in bunch.data.columns], axis=1).head(80)
    frame = frame[list(reversed(frame.columns))]
    answer = answer_records(post_csv(client, frame.to_csv(index=False), name="breast_cancer"))
    expected = json_batch(client, "breast_cancer", frame.to_dict(orient="records"))
    assert [record["prediction"] for record in answer] == expected["predictions"]
    assert [
        {label: float(record[f"probability_{label}"]) for label in ("malignant", "benign")}
        for record in answer
    ] == expected["probabilities"]


def test_several_chunks_make_one_answer_in_order(client: FlaskClient, small_chunks: int) -> None:
    answer = answer_records(post_csv(client, iris_file(35)))
    assert [record["id"] for record in answer] == [str(index) for index in range(35)]
    assert {record["prediction"] for record in answer} == {"setosa"}


def test_header_only_is_an_empty_answer(client: FlaskClient) -> None:
    assert answer_rows(post_csv(client, IRIS_HEADER + "\n")) == [[*IRIS_HEADER.split(","), *IRIS_OUTPUT]]
    assert answer_rows(post_csv(client, IRIS_HEADER)) == [[*IRIS_HEADER.split(","), *IRIS_OUTPUT]]


def test_byte_order_mark_crlf_blank_lines_and_spaces_in_the_header(client: FlaskClient) -> None:
    text = (
        "\ufeffid, sepal_length ,sepal_width,petal_length,petal_width\r\n"
        "\r\n1,5.1,3.5,1.4,0.2\r\n\r\n2,6.9,3.1,5.4,2.1"
    )
    header, *rows = answer_rows(post_csv(client, text))
    assert header[:5] == ["id", " sepal_length ", "sepal_width", "petal_length", "petal_width"]
    assert [(row[0], row[5]) for row in rows] == [("1", "setosa"), ("2", "virginica")]


def test_quoted_cells_are_passed_through_and_lines_counted(client: FlaskClient) -> None:
    text = (
        "id,note,sepal_length,sepal_width,petal_length,petal_width\n"
        '1,"hello, world",5.1,3.5,1.4,0.2\n'
        '2,"two\nlines, ""quoted""",6.9,3.1,5.4,2.1\n'
        "3,plain,5.1,3.5,1.4,0.2\n"
    )
    answer = answer_records(post_csv(client, text))
    assert [record["note"] for record in answer] == ["hello, world", 'two\nlines, "quoted"', "plain"]
    assert [record["prediction"] for record in answer] == ["setosa", "virginica", "setosa"]
    # Row 3 starts on line 5: the quoted cell of row 2 holds a line break.
    bad = text.replace("3,plain,5.1", "3,plain,wide")
    assert answer_records(post_csv(client, bad))[2]["error"] == "line 5: sepal_length: Not a valid number."
    body = assert_problem(post_csv(client, bad, on_error="fail"), 422)
    assert body["errors"] == {"line 5": {"sepal_length": ["Not a valid number."]}}


def test_a_quoted_cell_may_run_across_chunks(client: FlaskClient, small_chunks: int) -> None:
    lines = ["id,note,sepal_length,sepal_width,petal_length,petal_width"]
    lines += [f"{index},n,{GOOD_ROW}" for index in range(8)]  # lines 2-9
    lines += ['8,"three', "line", f'note",{GOOD_ROW}']  # lines 10-12: across the first chunk's end
    lines += [f"{index},n,{GOOD_ROW}" for index in range(9, 40)]  # lines 13-43
    lines[35 - 1] = "bad,n,5.1,3.5,1.4,x"
    answer = answer_records(post_csv(client, "\n".join(lines) + "\n"))
    assert len(answer) == 40
    assert answer[8]["note"] == "three\nline\nnote" and answer[8]["prediction"] == "setosa"
    assert {record["id"]: record["error"] for record in answer if record["error"]} == {
        "bad": "line 35: petal_width: Not a valid number."
    }


def test_numbers_may_have_surrounding_spaces_and_exponents(client: FlaskClient) -> None:
    answer = answer_records(post_csv(client, f"{IRIS_HEADER}\n1, 5.1 ,35e-1,1.4,.2\n"))
    assert answer[0]["prediction"] == "setosa" and answer[0]["error"] == ""


def test_a_big_file_is_scored_in_vectorised_chunks(app: Flask, client: FlaskClient) -> None:
    rows = 25_000
    model = app.extensions["service"].registry.get("iris")
    calls: list[int] = []
    original = model.predict

    def counting(matrix: Any) -> Any:
        calls.append(len(matrix))
        return original(matrix)

    model.predict = counting  # type: ignore[method-assign]
    try:
        answer = answer_rows(post_csv(client, iris_file(rows)))
    finally:
        del model.predict
    assert len(answer) == rows + 1
    assert calls == [10_000, 10_000, 5_000]  # one model call per chunk, not per row


# --- Validation: the manifest's rules on text cells ------------------------------------


@pytest.fixture(scope="module")
def mixed_client(mixed_store_path: Path) -> FlaskClient:
    """An app over the model with every feature type (float, int, bool, category)."""

    # Under the reject policy the observed ranges refuse too, as the cell messages below expect.
    app = create_app(Settings(model_store=mixed_store_path, range_policy="reject"))
    app.config["TESTING"] = True
    return app.test_client()


MIXED_HEADER = "size,count,flag,colour"


def test_mixed_types_match_the_json_api(mixed_client: FlaskClient) -> None:
    cells = [("5.5", "3", "true", "red"), ("0.5", "20.0", "FALSE", "blue"), ("9", "0", "1", "green")]
    rows = [{"size": 5.5, "count": 3, "flag": True, "colour": "red"},
            {"size": 0.5, "count": 20, "flag": False, "colour": "blue"},
            {"size": 9.0, "count": 0, "flag": True, "colour": "green"}]  # fmt: skip
    text = MIXED_HEADER + "\n" + "\n".join(",".join(row) for row in cells) + "\n"
    answer = answer_records(post_csv(mixed_client, text, name="mixed"))
    expected = json_batch(mixed_client, "mixed", rows)
    assert [record["prediction"] for record in answer] == expected["predictions"]
    assert [float(record["probability_big"]) for record in answer] == [
        probabilities["big"] for probabilities in expected["probabilities"]
    ]


# (feature, cell in the file, the same value in JSON text); every one is refused.
REFUSED = [
    ("size", "abc", '"abc"'),
    ("size", "nan", "NaN"),
    ("size", "inf", "Infinity"),
    ("size", "-inf", "-Infinity"),
    ("size", "1e999", "1e999"),
    ("size", "-5", "-5"),
    ("size", "99", "99"),
    ("size", "0x10", '"0x10"'),
    ("count", "3.5", "3.5"),
    ("count", "three", '"three"'),
    ("count", "99", "99"),
    ("flag", "yes", '"yes"'),
    ("flag", "2", '"2"'),
    ("flag", "truee", '"truee"'),
    ("colour", "Red", '"Red"'),
    ("colour", " red", '" red"'),
    ("colour", "purple", '"purple"'),
]


@pytest.mark.parametrize(("feature", "cell", "json_value"), REFUSED)
def test_refused_cells_get_the_json_api_messages(
    mixed_client: FlaskClient, feature: str, cell: str, json_value: str
) -> None:
    good = {"size": "5.5", "count": "3", "flag": "true", "colour": "red"}
    row = {**good, feature: cell}
    text = MIXED_HEADER + "\n" + ",".join(row.values()) + "\n"
    body = assert_problem(post_csv(mixed_client, text, name="mixed", on_error="fail"), 422)
    json_row = {"size": "5.5", "count": "3", "flag": "true", "colour": '"red"', feature: json_value}
    data = "{" + ", ".join(f'"{name}": {value}' for name, value in json_row.items()) + "}"
    reference = mixed_client.post("/v1/models/mixed/predict", data=data, content_type="application/json")
    assert reference.status_code == 422
    assert body["errors"] == {"line 2": {feature: reference.get_json()["errors"][feature]}}
    # The streamed answer words the same fault in the row's error cell.
    (record,) = answer_records(post_csv(mixed_client, text, name="mixed"))
    assert record["error"] == f"line 2: {feature}: {' '.join(reference.get_json()['errors'][feature])}"
    assert record["prediction"] == ""


@pytest.mark.parametrize(
    ("feature", "cell"),
    [("size", " 5.5 "), ("size", "1e0"), ("count", "7.0"), ("count", "-0"), ("flag", "True"),
     ("flag", "0"), ("flag", "FALSE"), ("colour", "green")],
)  # fmt: skip
def test_accepted_cells(mixed_client: FlaskClient, feature: str, cell: str) -> None:
    row = {"size": "5.5", "count": "3", "flag": "true", "colour": "red", feature: cell}
    answer = answer_records(
        post_csv(mixed_client, MIXED_HEADER + "\n" + ",".join(row.values()), name="mixed")
    )
    assert answer[0]["prediction"] in {"big", "small"} and answer[0]["error"] == ""


def test_empty_cells_are_missing_values(mixed_client: FlaskClient) -> None:
    body = assert_problem(
        post_csv(mixed_client, MIXED_HEADER + "\n,,,\n", name="mixed", on_error="fail"), 422
    )
    assert body["errors"] == {
        "line 2": {feature: ["Missing value: the cell is empty."] for feature in MIXED_HEADER.split(",")}
    }


# --- Bad rows: in the error column by default, a 422 with on_error=fail --------------------


def test_bad_rows_in_the_first_chunk_are_answered_in_place(client: FlaskClient) -> None:
    text = iris_file(20, {4: "2,5.1,wide,1.4,0.2", 9: "7,5.1,3.5,x,nan"})
    answer = answer_records(post_csv(client, text))
    assert len(answer) == 20
    errors = {index: record["error"] for index, record in enumerate(answer) if record["error"]}
    assert errors == {
        2: "line 4: sepal_width: Not a valid number.",
        7: "line 9: petal_length: Not a valid number.; "
        "petal_width: Special numeric values (nan or infinity) are not permitted.",
    }
    for index, record in enumerate(answer):
        outputs = [record[column] for column in IRIS_OUTPUT[:-2]]
        assert (outputs == [""] * 4) if index in errors else (record["prediction"] == "setosa")


def test_on_error_fail_refuses_the_file_with_a_422_by_line(client: FlaskClient) -> None:
    text = iris_file(20, {4: "2,5.1,wide,1.4,0.2", 9: "7,5.1,3.5,x,nan"})
    body = assert_problem(post_csv(client, text, on_error="fail"), 422)
    assert body["type"] == "/problems/invalid-input"
    assert body["errors"] == {
        "line 4": {"sepal_width": ["Not a valid number."]},
        "line 9": {
            "petal_length": ["Not a valid number."],
            "petal_width": ["Special numeric values (nan or infinity) are not permitted."],
        },
    }
    assert body["detail"].startswith("2 of the 20 rows are invalid")
    good = post_csv(client, iris_file(20), on_error="fail")
    assert good.headers["Content-Length"] == str(len(good.get_data()))  # sent whole, once scored
    assert good.get_data() == post_csv(client, iris_file(20)).get_data()


def test_on_error_fail_lists_at_most_a_hundred_bad_fields_then_counts_the_rest(client: FlaskClient) -> None:
    one_bad_field = iris_file(200, {line: f"{line},x,3.5,1.4,0.2" for line in range(2, 152)})
    body = assert_problem(post_csv(client, one_bad_field, on_error="fail"), 422)
    assert list(body["errors"]) == [f"line {line}" for line in range(2, 102)]
    assert body["errors_omitted"] == 50
    assert "150 of the 200 rows" in body["detail"] and "50 more are not" in body["detail"]

    two_bad_fields = iris_file(100, {line: f"{line},x,3.5,1.4,y" for line in range(2, 62)})
    body = assert_problem(post_csv(client, two_bad_fields, on_error="fail"), 422)
    assert list(body["errors"]) == [f"line {line}" for line in range(2, 52)]  # 50 lines x 2 fields
    assert body["errors_omitted"] == 20


def test_on_error_fail_judges_the_whole_file(client: FlaskClient, small_chunks: int) -> None:
    # Bad rows in the third chunk and the last: every one is named or counted, wherever it is.
    text = iris_file(200, {25: "a,x,3.5,1.4,0.2", 201: "b,5.1,3.5,1.4,y"})
    body = assert_problem(post_csv(client, text, on_error="fail"), 422)
    assert body["errors"] == {
        "line 25": {"sepal_length": ["Not a valid number."]},
        "line 201": {"petal_width": ["Not a valid number."]},
    }
    assert body["detail"].startswith("2 of the 200 rows are invalid")
    many = iris_file(200, {line: f"{line},x,3.5,1.4,y" for line in range(12, 202)})
    body = assert_problem(post_csv(client, many, on_error="fail"), 422)
    assert len(body["errors"]) == 50 and body["errors_omitted"] == 2 * 190 - 100
    assert "190 of the 200 rows" in body["detail"]


def test_a_chunk_is_ten_thousand_lines_and_each_bad_row_keeps_its_place(client: FlaskClient) -> None:
    assert csv_scoring.CHUNK_ROWS == 10_000
    text = iris_file(10_500, {10_001: "x,5.1,3.5,1.4,oops", 10_002: "y,5.1,3.5,1.4,oops"})
    answer = answer_records(post_csv(client, text))
    assert len(answer) == 10_500
    errors = [(index, record) for index, record in enumerate(answer) if record["error"]]
    assert errors == [
        (index, {"id": name, **dict(zip(IRIS, [*GOOD_ROW.split(",")[:3], "oops"], strict=True)),
                 **dict.fromkeys(IRIS_OUTPUT[:-2], ""),
                 "error": f"line {index + 2}: petal_width: Not a valid number.", "warnings": ""})
        for index, name in ((9_999, "x"), (10_000, "y"))
    ]  # fmt: skip
    assert all(record["prediction"] == "setosa" for record in answer if not record["error"])


def test_bad_rows_of_every_kind_are_answered_in_the_error_column(
    client: FlaskClient, small_chunks: int
) -> None:
    text = iris_file(
        40,
        {
            3: "first-chunk,5.1,3.5,1.4,x",
            15: "bad-value,5.1,3.5,1.4,nan",
            20: "too-few,5.1,3.5,1.4",
            25: "too-many,5.1,3.5,1.4,0.2,extra",
            30: "empty,5.1,,1.4,0.2",
        },
    ).encode()
    text = text.replace(b"\n35,", b"\n35\xe9,")  # Latin-1, not UTF-8, on line 37
    answer = answer_records(post_csv(client, text))
    assert len(answer) == 40
    errors = {record["id"]: record["error"] for record in answer if record["error"]}
    assert errors == {
        "first-chunk": "line 3: petal_width: Not a valid number.",
        "bad-value": "line 15: petal_width: Special numeric values (nan or infinity) are not permitted.",
        "too-few": "line 20: The row has 4 cells; the header has 5.",
        "too-many": "line 25: The row has 6 cells; the header has 5.",
        "empty": "line 30: sepal_width: Missing value: the cell is empty.",
        "35\ufffd": "line 37: Line 37 is not valid UTF-8; send the file as UTF-8.",
    }
    for record in answer:
        if record["error"]:
            assert record["prediction"] == record["probability_setosa"] == ""
        else:
            assert record["prediction"] == "setosa" and float(record["probability_setosa"]) > 0.9
    # A ragged row is answered padded or cut to the header's width.
    assert [record["petal_width"] for record in answer if record["id"].startswith("too")] == ["", "0.2"]


def test_ragged_and_non_utf8_rows_in_the_first_chunk(client: FlaskClient) -> None:
    answer = answer_records(post_csv(client, iris_file(5, {3: "1,5.1,3.5,1.4"})))
    assert [record["error"] for record in answer] == [
        "",
        "line 3: The row has 4 cells; the header has 5.",
        "",
        "",
        "",
    ]
    latin1 = iris_file(5).encode().replace(b"\n2,", b"\n\xe9,")
    body = assert_problem(post_csv(client, latin1, on_error="fail"), 422)
    assert body["errors"] == {"line 4": {"_row": ["Line 4 is not valid UTF-8; send the file as UTF-8."]}}


def test_blank_lines_are_skipped_and_still_counted(client: FlaskClient) -> None:
    text = f"{IRIS_HEADER}\n\n1,{GOOD_ROW}\n\n\n2,5.1,3.5,1.4,x\n"
    assert [record["error"] for record in answer_records(post_csv(client, text))] == [
        "",
        "line 6: petal_width: Not a valid number.",
    ]


# --- Files that cannot be read ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (IRIS_HEADER.replace(",", ";") + "\n1;5.1;3.5;1.4;0.2\n", "separated by semicolons"),
        (IRIS_HEADER.replace(",", "\t") + "\n1\t5.1\t3.5\t1.4\t0.2\n", "separated by tabs"),
    ],
)
def test_another_delimiter_is_named(client: FlaskClient, text: str, fragment: str) -> None:
    body = assert_problem(post_csv(client, text), 422)
    assert fragment in body["detail"] and "only comma-separated" in body["detail"]
    assert set(body["errors"]["line 1"]) == set(IRIS)


def test_missing_feature_columns_are_named(client: FlaskClient) -> None:
    body = assert_problem(post_csv(client, "id,sepal_length,petal_length\n1,5.1,1.4\n"), 422)
    assert "lacks the columns sepal_width, petal_width" in body["detail"]
    assert body["errors"] == {
        "line 1": {
            "sepal_width": ["No column of this name in the header."],
            "petal_width": ["No column of this name in the header."],
        }
    }


def test_a_feature_column_twice_is_refused(client: FlaskClient) -> None:
    body = assert_problem(post_csv(client, IRIS_HEADER + ",sepal_width\n1,5.1,3.5,1.4,0.2,3.5\n"), 422)
    assert body["errors"] == {"line 1": {"sepal_width": ["The header names this column 2 times."]}}


def test_empty_file_is_422(client: FlaskClient) -> None:
    for text in ("", "\n\n"):
        body = assert_problem(post_csv(client, text), 422)
        assert "empty" in body["detail"]


def test_header_not_utf8_is_400(client: FlaskClient) -> None:
    body = assert_problem(post_csv(client, "id,s\xe9pal\n1\n".encode("latin-1")), 400)
    assert "not valid UTF-8" in body["detail"]


@pytest.mark.parametrize(
    ("line", "text", "fragment"),
    [
        (3, '1,"never closed,5.1,3.5,1.4,0.2', "Line 3 opens a quoted cell that is never closed."),
        (3, '1,"a"b,5.1,3.5,1.4,0.2', "Line 3 cannot be read as CSV: ',' expected after '\"'."),
        (3, "1,5.1\r3.5,1.4,0.2", "Line 3 cannot be read as CSV: new-line character seen"),
    ],
)
def test_broken_quoting_is_422_with_its_line(
    client: FlaskClient, line: int, text: str, fragment: str
) -> None:
    body = assert_problem(post_csv(client, iris_file(30, {line: text})), 422)
    assert fragment in body["detail"]
    assert list(body["errors"]) == [f"line {line}"]


def test_a_fault_of_the_file_after_the_first_chunk_ends_the_answer_with_its_reason(
    client: FlaskClient, small_chunks: int
) -> None:
    text = iris_file(40, {33: '1,"never closed,5.1,3.5,1.4,0.2'})
    answer = answer_rows(post_csv(client, text))
    # The rows before the fault (lines 2-32), then one row that says why the rest is missing.
    assert [row[0] for row in answer[1:-1]] == [str(index) for index in range(31)]
    assert answer[-1] == [""] * (len(answer[0]) - 2) + [
        "line 33: Scoring stopped: Line 33 opens a quoted cell that is never closed. "
        "The rows from line 33 on are not in this answer.",
        "",
    ]
    # With on_error=fail nothing is sent before the end: the fault is a 422.
    body = assert_problem(post_csv(client, text, on_error="fail"), 422)
    assert list(body["errors"]) == ["line 33"]


def test_a_line_longer_than_a_chunk_is_refused(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_reading, "CHUNK_BYTES", 1000)
    text = iris_file(3, {3: "x" * 200_000 + "," + GOOD_ROW})
    body = assert_problem(post_csv(client, text, on_error="fail"), 422)
    assert "Line 3 is longer than 1000 bytes" in body["detail"]
    # Streamed, the first chunk (line 2) is answered before line 3 is read.
    *_, last = answer_rows(post_csv(client, text))
    assert last[-2] == (
        "line 3: Scoring stopped: Line 3 is longer than 1000 bytes. "
        "The rows from line 3 on are not in this answer."
    )
    # A line over the limit within the first chunk is a 422 either way.
    body = assert_problem(post_csv(client, "x" * 200_000 + "\n"), 422)
    assert "Line 1 is longer than 1000 bytes" in body["detail"]


@pytest.fixture
def fragile_client(make_app: Any, tmp_path: Path) -> FlaskClient:
    """A regressor that fails on any row with x == 6 (tests/estimators.py)."""
    frame = pd.DataFrame({"x": np.linspace(0, 10, 50)})
    store_model(tmp_path, ExplodingRegressor().fit(frame, np.zeros(50)), "fragile", "1", sample=frame)
    return make_app(model_store=tmp_path).test_client()


def test_model_failure_mid_file_is_answered_on_the_rows_it_hit(
    fragile_client: FlaskClient, small_chunks: int
) -> None:
    text = "x\n" + "1\n" * 25 + "6\n" + "1\n" * 3 + "x\n" + "1\n" * 5  # lines 2-11, 12-21, 22-31, 32-36
    response = post_csv(fragile_client, text, name="fragile", headers={"X-Request-ID": "fragile-1"})
    answer = answer_records(response)
    assert len(answer) == 35
    failed = (
        "The model failed to predict the rows of lines 22 to 31, this one among them; "
        "quote request id fragile-1 when reporting it."
    )
    assert [record["error"] for record in answer[20:30]] == [
        *(f"line {line}: {failed}" for line in range(22, 31)),
        "line 31: x: Not a valid number.",  # an invalid row keeps its own reason
    ]
    assert all(record["prediction"] == "" for record in answer[20:30])
    assert all(record["error"] == "" and record["prediction"] for record in answer[:20] + answer[30:])
    assert "secret" not in response.get_data(as_text=True)


def test_model_failure_before_the_answer_starts_is_a_500_problem(fragile_client: FlaskClient) -> None:
    for on_error in (None, "fail"):
        body = assert_problem(
            post_csv(fragile_client, "x\n1\n6\n1\n", name="fragile", on_error=on_error), 500
        )
        assert body["type"] == "/problems/prediction-failed"
        assert body["request_id"] and "secret" not in json.dumps(body)


# --- Request checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Content-Type": "text/plain"},
        {},
        {"Content-Type": "text/csv; charset=latin-1"},
        {"Content-Type": "text/csv", "Content-Encoding": "gzip"},
    ],
)
def test_other_media_types_are_415(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post(csv_path(), data=iris_file(2).encode(), headers=headers)
    assert_problem(response, 415)


def test_csv_with_utf8_charset_is_accepted(client: FlaskClient) -> None:
    response = post_csv(client, iris_file(2), content_type="text/csv; charset=UTF-8")
    assert len(answer_rows(response)) == 3


def test_multipart_without_a_file_field_is_422(client: FlaskClient) -> None:
    response = client.post(
        csv_path(),
        data={"upload": (io.BytesIO(iris_file(2).encode()), "x.csv")},
        content_type="multipart/form-data",
    )
    body = assert_problem(response, 422)
    assert body["errors"] == {"file": ["Missing data for required field."]}


def test_broken_multipart_is_400(client: FlaskClient) -> None:
    assert_problem(client.post(csv_path(), data=b"x", content_type="multipart/form-data"), 400)
    response = client.post(
        csv_path(), data=b"--b\r\nno headers end", content_type="multipart/form-data; boundary=b"
    )
    assert_problem(response, 400)


def test_unknown_model_is_404(client: FlaskClient) -> None:
    body = assert_problem(post_csv(client, iris_file(2), name="nope"), 404)
    assert body["type"] == "/problems/model-not-found"


def exact_size_file(size: int) -> bytes:
    """A valid iris file of exactly ``size`` bytes (the last id padded with zeros)."""
    text, row = IRIS_HEADER + "\n", f"0,{GOOD_ROW}\n"
    while size - len(text) >= 2 * len(row):
        text += row
    text += "0" * (size - len(text) - len(row)) + row
    assert len(text) == size
    return text.encode()


def test_upload_over_max_upload_bytes_is_413(make_app: Any, demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_upload_bytes=1000, max_body_bytes=100).test_client()
    at_limit, over = exact_size_file(1000), exact_size_file(1001)
    # The upload limit, not the JSON body limit, applies to files.
    assert len(answer_rows(post_csv(client, at_limit))) > 10
    assert len(answer_rows(post_chunked(client, at_limit))) > 10
    for response in (post_csv(client, over), post_chunked(client, over)):
        body = assert_problem(response, 413)
        assert "1000 bytes" in body["detail"]
    form = client.post(
        csv_path(), data={"file": (io.BytesIO(at_limit), "x.csv")}, content_type="multipart/form-data"
    )
    assert_problem(form, 413)  # the limit counts the whole body


def test_openapi_documents_the_route(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/v1/models/{name}/predict/csv"]["post"]
    assert "text/csv" in operation["responses"]["200"]["content"]
    on_error, stream = [parameter for parameter in operation["parameters"] if parameter["in"] == "query"]
    assert on_error["name"] == "on_error"
    assert on_error["schema"] == {"type": "string", "default": "row", "enum": ["row", "fail"]}
    assert stream["name"] == "stream" and stream["schema"] == {"type": "boolean", "default": True}
    assert {"400", "404", "413", "415", "422", "503"} <= set(operation["responses"])
    assert "multipart/form-data" in operation["description"]


# --- Metrics and the audit log ---------------------------------------------------------


def counter(metrics_text: str, outcome: str) -> float:
    pattern = rf'sklearn_service_predictions_total{{model="iris",outcome="{outcome}",version="1"}} (\S+)'
    match = re.search(pattern, metrics_text)
    return float(match.group(1)) if match else 0.0


def test_rows_are_counted_in_the_metrics(make_app: Any, demo_store_path: Path, small_chunks: int) -> None:
    client = make_app(model_store=demo_store_path).test_client()
    answer_rows(post_csv(client, iris_file(40, {5: "x,5.1,3.5,1.4,x", 25: "x,5.1,3.5,1.4,x"})))
    assert_problem(post_csv(client, iris_file(25, {3: "x,5.1,3.5,1.4,x"}), on_error="fail"), 422)
    text = client.get("/metrics").get_data(as_text=True)
    # Streamed: 38 good rows predicted, 2 bad; refused: the first chunk (10 rows) strictly, the rest judged.
    assert counter(text, "success") == 38
    assert counter(text, "invalid") == 2 + 25
    assert 'sklearn_service_prediction_duration_seconds_count{model="iris"} 4.0' in text  # one per chunk


def test_predicted_rows_go_to_the_audit_log(make_app: Any, demo_store_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "predictions.jsonl"
    app = make_app(model_store=demo_store_path, prediction_log=log)
    bad = iris_file(30, {10: "x,5.1,3.5,1.4,x"})
    refused = post_csv(app.test_client(), bad, on_error="fail", headers={"X-Request-ID": "csv-1"})
    assert refused.status_code == 422
    answer_rows(post_csv(app.test_client(), bad, headers={"X-Request-ID": "csv-2"}))
    app.extensions["service"].audit.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {line["request_id"] for line in lines} == {"csv-2"}  # nothing of the refused file
    assert [line["row"] for line in lines] == [index for index in range(30) if index != 8]
    assert lines[0]["inputs"] == dict(zip(IRIS, map(float, GOOD_ROW.split(",")), strict=True))
    assert lines[0]["output"] == "setosa"


def test_random_files_never_fail_the_server(client: FlaskClient) -> None:
    """Arbitrary bytes and mangled iris files: always a CSV answer or a problem, never a 500."""
    rng = random.Random(11)
    base = iris_file(30).encode()
    for _ in range(200):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position : position + rng.randint(0, 3)] = bytes(
                rng.choice(b'",;\n\r\xe9\xff0x. ') for _ in range(rng.randint(0, 3))
            )
        response = post_csv(client, bytes(data))
        assert response.status_code in {200, 400, 422}, response.get_data(as_text=True)
        if response.status_code == 200:
            answer = answer_rows(response)
            assert len(answer) >= 1
            assert "the service failed" not in answer[-1][-2], answer[-1]
        else:
            assert response.mimetype == PROBLEM
