"""One rule set: the JSON route, the CSV route and the marshmallow row schema agree on every row.

For rows hypothesis draws (numbers around the bounds and beyond 2**53, signed
zeros, fractions for integers, booleans, category strings with commas, quotes and
line breaks), each of the three accepts exactly the same rows and, for a refused
row, names exactly the same fields:

- the v1 JSON route, ``{"instances": rows}``, all or nothing and with ``on_error=row``;
- the CSV route, the same rows as text cells (one model call per chunk), all or
  nothing (``on_error=fail``) and streamed with each bad row's error in place;
- the row schema (``RuleSet.row_schema``) that documents a row in OpenAPI.

The model ignores its input (a prior), so every row the rules pass is predicted.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from sklearn.dummy import DummyClassifier

from service.app import create_app
from service.config import Settings
from service.models.manifest import Feature
from service.models.rules import RuleSet
from service.models.text_cells import MISSING_MARKERS, check_cells
from tests.helpers import edit_manifest, store_model
from tests.rows import JsonValidator, manifest_of, with_features

CATEGORIES = ["red", "green, or teal", 'say "blue"', "line\nbreak", "=1+1", "ünï"]
FEATURES = [
    # Observed ranges narrower than the limits: values between them are served and flagged.
    Feature("size", "float", min=-1.0, max=1.0, limits=(-1.5, 1e300)),
    Feature("count", "int", min=0, max=2.0**53, limits=(0, 2.0**53)),
    Feature("big", "int"),
    Feature("flag", "bool"),
    Feature("colour", "category", categories=tuple(CATEGORIES)),
    Feature("maybe", "float", min=0.0, max=3.0, nullable=True),
    Feature("toggle", "bool", nullable=True),
    Feature("shade", "category", categories=("light", "dark"), nullable=True, accepts_unknown=True),
]
NAMES = [feature.name for feature in FEATURES]
MANIFEST = manifest_of("every", *FEATURES, task="classification")
POLICIES = ("flag", "reject")


def manifest_features() -> list[dict[str, Any]]:
    return [
        {key: value for key, value in vars(feature).items() if value is not None}
        | ({"categories": list(feature.categories)} if feature.categories else {})
        | ({"limits": dict(zip(("min", "max"), feature.limits, strict=True))} if feature.limits else {})
        for feature in FEATURES
    ]


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FlaskClient]:
    """One app per range policy, over the same store."""
    root = tmp_path_factory.mktemp("rules_store")
    frame = pd.DataFrame({"size": [0.5, 1.0], "count": [1, 2], "big": [3, 4], "flag": [True, False],
                          "colour": ["red", "red"], "maybe": [1.0, 2.0], "toggle": [True, False],
                          "shade": ["light", "dark"]})  # fmt: skip
    directory = store_model(root, DummyClassifier().fit(frame, ["a", "b"]), "every", "1", sample=frame)
    edit_manifest(directory, features=manifest_features(), typical_row=None)
    built = {}
    for policy in POLICIES:
        app: Flask = create_app(Settings(model_store=root, range_policy=policy))
        app.config["TESTING"] = True
        built[policy] = app.test_client()
    return built


@pytest.fixture(scope="module")
def client(clients: dict[str, FlaskClient]) -> FlaskClient:
    return clients["flag"]


NUMBERS = st.one_of(
    st.sampled_from([0, 1, -0.0, 0.0, -1.5, -1.6, 2.5, 3.5, 1e300, 1.5e300, 2.0**53, 2.0**54]),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63, 10**30, -(10**30)]),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), min_size=1, max_size=6)


def values_for(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.type == "bool":
        found = st.booleans()
    elif feature.type == "category":
        text = TEXT.filter(lambda value: not feature.nullable or value not in MISSING_MARKERS)
        found = st.one_of(st.sampled_from(feature.categories or ()), text)
    else:
        found = NUMBERS
    return st.one_of(found, st.none()) if feature.nullable else found


ROW = st.fixed_dictionaries({feature.name: values_for(feature) for feature in FEATURES})
MISSING = {feature.name: None for feature in FEATURES if feature.nullable}


def cell(value: Any) -> str:
    """A JSON value as a CSV cell: booleans as true/false, numbers as JSON writes them, null empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


Verdict = tuple[set[tuple[int, str]], set[tuple[int, str]]]  # (errors, warnings) by (row, field)


def sent_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A missing value sent as null in even rows and left out in odd ones: both mean missing."""
    return [
        {name: value for name, value in row.items() if value is not None or index % 2 == 0}
        for index, row in enumerate(rows)
    ]


def json_verdict(client: FlaskClient, rows: list[dict[str, Any]]) -> Verdict:
    response = client.post("/v1/models/every/predict", json={"instances": sent_rows(rows)})
    if response.status_code == 200:
        assert len(response.get_json()["predictions"]) == len(rows)
        warned = response.get_json().get("warnings", {})
        return set(), {(int(index), field) for index, fields in warned.items() for field in fields}
    assert response.status_code == 422, response.get_json()
    return {
        (int(index), field) for index, fields in response.get_json()["errors"].items() for field in fields
    }, set()


def json_row_verdict(client: FlaskClient, rows: list[dict[str, Any]]) -> Verdict:
    """The batch route with on_error=row: the refused fields, and null for exactly those rows."""
    response = client.post("/v1/models/every/predict/batch?on_error=row", json={"instances": sent_rows(rows)})
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    found = {(int(index), field) for index, fields in answer.get("errors", {}).items() for field in fields}
    assert [index for index, value in enumerate(answer["predictions"]) if value is None] == sorted(
        {index for index, _ in found}
    )
    warned = answer.get("warnings", {})
    return found, {(int(index), field) for index, fields in warned.items() for field in fields}


def csv_file(rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """The rows as a CSV file, and the line each starts on (a quoted cell may hold line breaks)."""
    lines, line = [], 2  # the header is line 1
    text = ",".join(NAMES) + "\n"
    for row in rows:
        written = io.StringIO()
        csv.writer(written, lineterminator="\n").writerow([cell(row[name]) for name in NAMES])
        lines.append(line)
        line += written.getvalue().count("\n")
        text += written.getvalue()
    return text, lines


def csv_verdict(client: FlaskClient, rows: list[dict[str, Any]]) -> Verdict:
    """The CSV route with on_error=fail: a 422 naming each bad field by line, or every row predicted."""
    text, lines = csv_file(rows)
    response = client.post(
        "/v1/models/every/predict/csv?on_error=fail", data=text.encode(), content_type="text/csv"
    )
    if response.status_code == 200:
        answer = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert len(answer) == len(rows) and all(record["error"] == "" for record in answer)
        return set(), {
            (index, part.split(": ", 1)[0])
            for index, record in enumerate(answer)
            if record["warnings"]
            for part in record["warnings"].split("; ")
        }
    assert response.status_code == 422, response.get_json()
    errors = response.get_json()["errors"]
    index = {f"line {line}": row for row, line in enumerate(lines)}
    return {(index[line], field) for line, fields in errors.items() for field in fields}, set()


def csv_row_verdict(client: FlaskClient, rows: list[dict[str, Any]]) -> set[int]:
    """The CSV route's streamed answer: the rows answered with an error (on their line) and no prediction."""
    text, lines = csv_file(rows)
    response = client.post("/v1/models/every/predict/csv", data=text.encode(), content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    answer = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(answer) == len(rows)
    bad = {index for index, record in enumerate(answer) if record["error"]}
    for index, record in enumerate(answer):
        assert record["error"].startswith(f"line {lines[index]}: ") == (index in bad)
        assert (record["prediction"] == "") == (index in bad)
    return bad


def schema_verdict(rows: list[dict[str, Any]], policy: str) -> Verdict:
    """The errors by the row schema; the warnings of the valid rows as the manifest says, written out here."""
    schema = RuleSet(MANIFEST, policy).row_schema()
    found = set()
    for index, row in enumerate(rows):
        try:
            schema.load(row)
        except ValidationError as error:
            found |= {(index, field) for field in error.normalized_messages()}
    if policy == "reject":
        return found, set()
    flagged = set()
    refused = {index for index, _ in found}
    for index, row in enumerate(rows):
        if index in refused:
            continue
        for feature in FEATURES:
            value = row[feature.name]
            if value is None or feature.type == "bool":
                continue
            if feature.type == "category":
                outside = feature.accepts_unknown and value not in (feature.categories or ())
            else:
                outside = not (feature.min is None or value >= feature.min) or not (
                    feature.max is None or value <= feature.max
                )
            if outside:
                flagged.add((index, feature.name))
    return found, flagged


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=3))
@example(rows=[{**MISSING, "size": 0.5, "count": 2**53 + 1, "big": 2**63, "flag": True, "colour": "red"}])
@example(
    rows=[
        {**MISSING, "size": -0.0, "count": -0.0, "big": -(2**53) - 1, "flag": False, "colour": "line\nbreak"}
    ]
)
@example(rows=[{**MISSING, "size": 1.5e300, "count": 2.5, "big": 1e300, "flag": True, "colour": "green"}])
@example(rows=[{"size": 1.2, "count": 1, "big": 1, "flag": True, "colour": "red", "maybe": 4.0,
                "toggle": True, "shade": "grey"}] * 2)  # fmt: skip
def test_json_csv_and_schema_accept_refuse_and_flag_the_same_rows(
    clients: dict[str, FlaskClient], rows: list[dict[str, Any]]
) -> None:
    for policy, client in clients.items():
        errors, warnings = schema_verdict(rows, policy)
        # All or nothing: a refused request has no warnings; row by row, the valid rows keep theirs.
        assert json_verdict(client, rows) == (errors, set() if errors else warnings), policy
        assert csv_verdict(client, rows) == (errors, set() if errors else warnings), policy
        assert json_row_verdict(client, rows) == (errors, warnings), policy
        assert csv_row_verdict(client, rows) == {index for index, _ in errors}, policy


def test_integers_beyond_2_53_are_judged_exactly_in_csv_cells(client: FlaskClient) -> None:
    """``count`` has max 2**53: 2**53 + 1 reads as the float 2**53, yet is past the bound (a fixed drift)."""
    header = ",".join(NAMES)
    over = client.post(
        "/v1/models/every/predict/csv?on_error=fail",
        data=f"{header}\n0.5,{2**53 + 1},1,true,red,,,\n".encode(),
        content_type="text/csv",
    )
    assert over.status_code == 422
    assert over.get_json()["errors"] == {
        "line 2": {
            "count": ["Must be greater than or equal to 0.0 and less than or equal to 9007199254740992.0."]
        }
    }
    at = client.post(
        "/v1/models/every/predict/csv",
        data=f"{header}\n0.5,{2**53},1,true,red,,,\n".encode(),
        content_type="text/csv",
    )
    assert at.status_code == 200


def test_minus_zero_is_the_integer_zero_in_json_and_csv_cells() -> None:
    """An int feature's -0.0 reaches the model as 0 whichever way it was sent (CSV cells kept -0.0)."""
    numbers = with_features(MANIFEST, FEATURES[0], FEATURES[1])
    matrix = check_cells(RuleSet(numbers), np.array([["-0.0", "-0"], ["-0.0", "-0.0"]], dtype=object)).matrix
    from_json = JsonValidator(numbers).validate_many([[-0.0, -0.0], [-0.0, -0]])
    for sent in (matrix, from_json):
        assert sent.dtype == np.float64
        assert [[str(value) for value in row] for row in sent.tolist()] == [["-0.0", "0.0"]] * 2
