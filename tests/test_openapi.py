"""The OpenAPI document: generated from the routes and schemas, one request schema per model."""

from __future__ import annotations

import re
import string
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markdown_it import MarkdownIt
from sklearn.linear_model import LogisticRegression
from werkzeug.exceptions import RequestEntityTooLarge

from service.api.openapi import build_document, documented, literal_markdown
from service.api.problems import PROBLEM_TYPES, ProblemType
from service.errors import ServiceError, TooManyRows
from tests.helpers import store_model, tiny_frame


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def operations(document: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}


def test_it_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]


def test_every_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    models = ["breast_cancer", "diabetes", "iris"]
    expected = set()
    for rule in app.url_map.iter_rules():
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        path = rule.rule.replace("<path:filename>", "{filename}")
        for argument in rule.arguments:
            path = path.replace(f"<{argument}>", f"{{{argument}}}")
        if rule.endpoint.startswith("predict.") and "name" in rule.arguments:
            expected |= {f"{method} {path.replace('{name}', name)}" for name in models}
        else:
            expected.add(f"{method} {path}")
    assert operations(document) == expected


def test_row_schema_comes_from_the_manifest(client: FlaskClient, document: dict[str, Any]) -> None:
    manifest = client.get("/v1/models/diabetes").get_json()
    row = document["components"]["schemas"]["diabetes.Row"]
    names = [feature["name"] for feature in manifest["features"]]
    assert list(row["properties"]) == names  # shown in manifest order
    assert sorted(row["required"]) == sorted(names)
    assert row["additionalProperties"] is False
    for feature in manifest["features"]:
        prop = row["properties"][feature["name"]]
        assert prop["type"] == {"int": "integer", "float": "number"}[feature["type"]]
        # The observed range is described, not enforced: only declared limits bound a value.
        assert "minimum" not in prop and "maximum" not in prop
        assert f"In training: {feature['min']:g} to {feature['max']:g};" in prop["description"]
    listed = document["components"]["schemas"]["diabetes.RowList"]
    assert listed["minItems"] == listed["maxItems"] == len(manifest["features"])
    assert listed["prefixItems"] == [row["properties"][name] for name in names]


def test_classifier_answers_name_their_classes(document: dict[str, Any]) -> None:
    prediction = document["components"]["schemas"]["iris.Prediction"]
    assert prediction["properties"]["prediction"]["enum"] == ["setosa", "versicolor", "virginica"]
    probabilities = document["components"]["schemas"]["iris.Probabilities"]
    assert sorted(probabilities["required"]) == ["setosa", "versicolor", "virginica"]
    regression = document["components"]["schemas"]["diabetes.Prediction"]
    assert regression["properties"]["prediction"]["type"] == "number"
    assert "probabilities" not in regression["properties"]


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris/predict/batch", "/v1/models/diabetes/predict"])
def test_worked_examples_are_accepted(client: FlaskClient, document: dict[str, Any], path: str) -> None:
    examples = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert "named" in examples
    for example in examples.values():
        response = client.post(path, json=example["value"])
        assert response.status_code == 200, (example, response.get_json())


def test_errors_are_documented_as_problems(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/models/iris/predict"]["post"]["responses"]
    assert {"200", "400", "404", "413", "415", "422", "500", "503"} <= set(responses)
    for status, response in responses.items():
        if status != "200":
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
        assert "X-Request-ID" in response["headers"]


def test_error_answers_are_described_from_the_one_problem_table(document: dict[str, Any]) -> None:
    """Each error status of a route lists the problem types it may answer with, in the table's words."""
    responses = document["paths"]["/v1/models/iris/predict"]["post"]["responses"]
    for kind in (PROBLEM_TYPES[TooManyRows], PROBLEM_TYPES[RequestEntityTooLarge]):
        assert f"`/problems/{kind.slug}`: {kind.when}" in responses["413"]["description"]
    # A JSON route never meets the CSV route's limits.
    assert "too-many-columns" not in responses["413"]["description"]


def test_a_new_error_type_is_documented_by_declaring_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class KeyMissing(ServiceError):
        pass

    monkeypatch.setitem(
        PROBLEM_TYPES, KeyMissing, ProblemType(401, "key-missing", "No API key", "No key was sent.")
    )
    app = Flask(__name__)

    @app.get("/guarded")
    @documented("Guarded", errors=(KeyMissing,))
    def guarded() -> dict[str, Any]:
        raise KeyMissing("No API key was sent.")

    responses = build_document(app, [], "iris", 10)["paths"]["/guarded"]["get"]["responses"]
    assert responses["401"]["description"] == "`/problems/key-missing`: No key was sent."
    assert set(responses) == {"200", "401", "500"}


def test_document_follows_the_served_models(make_app: Any, tmp_path: Path) -> None:
    frame, labels = tiny_frame()
    store_model(tmp_path, LogisticRegression().fit(frame, labels), "tiny", "1", sample=frame)
    app = make_app(model_store=tmp_path, default_model="tiny")
    document = app.test_client().get("/openapi.json").get_json()
    assert "POST /v1/models/tiny/predict" in operations(document)
    assert "POST /v1/models/iris/predict" not in operations(document)
    row = document["components"]["schemas"]["tiny.Row"]
    assert sorted(row["properties"]) == ["a", "b"]
    example = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert app.test_client().post("/predict", json=example["named"]["value"]).status_code == 200


def test_docs_pages_use_only_local_assets(client: FlaskClient) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "text/html"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        html = response.get_data(as_text=True)
        assert "http://" not in html and "https://" not in html
    assert client.get("/docs/assets/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/redoc/redoc.standalone.js").status_code == 200
    assert client.get("/docs/assets/other/x.js").status_code == 404
    assert client.get("/docs/assets/swagger/../../../etc/passwd").status_code == 404


@pytest.mark.parametrize(
    "text",
    [
        """<img src=x onerror="fetch('/beacon')">""",
        "<script>fetch('/beacon')</script>",
        "[x](javascript:fetch('/beacon')) ![y](/beacon) <https://example.com> www.example.com",
        "# not a heading",
        "1. not a list",
        "- not a list either",
        "*not* **emphasised** _at_ `all` ~~struck~~",
        "&amp; &#60; stay as typed",
        "a | b\n--- | ---\nnot | a table",
        "Not a heading\n===",
        "a backslash \\ and a trailing one \\",
        string.punctuation,
        "Sepal length (cm), 0-10; 95% of values",
    ],
)
def test_literal_markdown_renders_exactly_the_text(text: str) -> None:
    """A CommonMark renderer (with GitHub's tables and strikethrough) shows the text, and only text."""
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(literal_markdown(text))
    assert re.findall(r"<[^>]*>", rendered) == ["<p>", "</p>"], rendered
    assert unescape(rendered.removeprefix("<p>").removesuffix("</p>\n")) == text
