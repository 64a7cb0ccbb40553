"""The pages for people (GET / and GET /models/NAME), with Flask's test client.

Browsers get HTML built from each model's manifest; every other client keeps
getting JSON. Everything a page loads comes from the service itself.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from service import __version__
from service.app import create_app
from service.config import Settings
from tests.helpers import MIXED_COLOURS, MIXED_MODEL, edit_manifest, store_model

# What a browser sends when it asks for a page.
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
JSON_CLIENT = {"Accept": "application/json"}
DEMO_MODELS = ["breast_cancer", "diabetes", "iris"]


# --- Reading the HTML ----------------------------------------------------------------


class Page(HTMLParser):
    """The elements of a page that the tests look at: every tag's attributes, label texts."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.labels: dict[str, str] = {}  # for -> text
        self.options: dict[str, list[tuple[str, bool]]] = {}  # select id -> (value, selected)
        self.text: list[str] = []
        self._label_for: str | None = None
        self._label_text: list[str] = []
        self._select: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value if value is not None else "" for name, value in attrs}
        self.elements.append((tag, attributes))
        if tag == "label":
            self._label_for, self._label_text = attributes.get("for"), []
        elif tag == "select":
            self._select = attributes.get("id")
            self.options[self._select or ""] = []
        elif tag == "option" and self._select is not None:
            self.options[self._select].append((attributes["value"], "selected" in attributes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label_for is not None:
            self.labels[self._label_for] = " ".join("".join(self._label_text).split())
            self._label_for = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._label_for is not None:
            self._label_text.append(data)

    def find(self, tag: str | None = None, **match: str) -> list[dict[str, str]]:
        return [
            attributes
            for name, attributes in self.elements
            if (tag is None or name == tag)
            and all(attributes.get(key.replace("_", "-")) == value for key, value in match.items())
        ]

    def one(self, tag: str | None = None, **match: str) -> dict[str, str]:
        found = self.find(tag, **match)
        assert len(found) == 1, (tag, match, found)
        return found[0]

    def by_id(self, element_id: str) -> dict[str, str]:
        return self.one(id=element_id)

    @property
    def words(self) -> str:
        return " ".join("".join(self.text).split())


def get_page(client: FlaskClient, path: str) -> tuple[Any, Page]:
    response = client.get(path, headers=BROWSER)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    return response, Page(response.get_data(as_text=True))


def number(text: str) -> float:
    return float(text)


def feature_control(page: Page, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the feature's block, its main control), found by the feature's name."""
    block = page.one("div", data_name=name)
    return block, page.one(id=block["id"].removesuffix("-field"))


# --- A model with every kind of feature -----------------------------------------------


@pytest.fixture(scope="module")
def mixed_app(mixed_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """The model with every kind of feature (a float, an int, a bool and a category), its int
    described and its float left without a range."""

    root = tmp_path_factory.mktemp("described_mixed_store")
    shutil.copytree(mixed_store_path, root, dirs_exist_ok=True)
    directory = root / MIXED_MODEL / "1"
    features = json.loads((directory / "model.json").read_text())["features"]
    for feature in features:
        if feature["name"] == "count":
            feature.update(description="Items in the parcel", unit="items")
        if feature["name"] == "size":  # a feature with no range: a number box only
            feature.pop("min")
            feature.pop("max")
            feature["description"] = "Parcel size"
    edit_manifest(directory, features=features)
    built = create_app(Settings(model_store=root))
    built.config["TESTING"] = True
    return built


@pytest.fixture
def mixed(mixed_app: Flask) -> FlaskClient:
    return mixed_app.test_client()


# --- The home page -------------------------------------------------------------------


def test_home_page_lists_every_model_with_its_facts(client: FlaskClient) -> None:
    response, page = get_page(client, "/")
    words = page.words
    assert "scikit-learn model service" in words and __version__ in words
    listed = client.get("/v1/models").get_json()["models"]
    assert sorted(model["name"] for model in listed) == DEMO_MODELS
    for model in listed:
        manifest = client.get(f"/v1/models/{model['name']}").get_json()
        assert page.find("a", href=f"/models/{model['name']}"), model["name"]
        assert page.find("a", href=f"/v1/models/{model['name']}"), model["name"]
        assert manifest["task"].capitalize() in words
        assert manifest["trained_at"][:10] in words
        assert page.find("time", datetime=manifest["trained_at"])
        first_metric = next(iter(manifest["metrics"].values()))
        assert f"{first_metric:.4g}" in words
    assert words.count("Ready") >= len(listed)
    for target in ("/docs", "/metrics"):
        assert page.find("a", href=target), target
    assert response.headers["Vary"] == "Accept"


@pytest.mark.parametrize("headers", [JSON_CLIENT, {"Accept": "*/*"}, {}, {"Accept": "application/*"}])
def test_json_clients_of_home_get_json(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["name"] == "scikit-learn model service" and body["version"] == __version__
    assert [model["name"] for model in body["models"]] == DEMO_MODELS
    iris = next(model for model in body["models"] if model["name"] == "iris")
    assert iris["task"] == "classification" and iris["ready"] is True and iris["version"] == "1"
    assert iris["metrics"]["accuracy"] > 0.8 and iris["trained_at"]
    assert iris["links"]["page"] == "/models/iris"
    assert body["links"]["docs"] == "/docs" and body["links"]["metrics"] == "/metrics"
    assert "Content-Security-Policy" not in response.headers


def test_json_wins_a_tie(client: FlaskClient) -> None:
    """An API answer is never replaced: HTML only for a client that prefers it."""
    tie = client.get("/", headers={"Accept": "text/html, application/json"})
    assert tie.mimetype == "application/json"
    preferred = client.get("/", headers={"Accept": "application/json;q=0.5, text/html"})
    assert preferred.mimetype == "text/html"


# --- A model's page -------------------------------------------------------------------


def test_every_served_model_has_a_page(client: FlaskClient) -> None:
    for model in client.get("/v1/models").get_json()["models"]:
        response, page = get_page(client, f"/models/{model['name']}")
        assert model["name"] in page.words
        form = page.one("form", id="predict-form")
        assert form["data-predict-url"] == f"/v1/models/{model['name']}/predict"
        assert page.one("form", id="csv-form")["data-csv-url"] == f"/v1/models/{model['name']}/predict/csv"
        assert page.one(id="result")["aria-live"] == "polite"
        assert response.headers["Vary"] == "Accept"


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_every_feature_has_a_labelled_control_with_bounds_and_the_typical_value(
    client: FlaskClient, name: str
) -> None:
    manifest = client.get(f"/v1/models/{name}").get_json()
    _, page = get_page(client, f"/models/{name}")
    blocks = page.find("div", **{"class": "field field-number"})
    assert [block["data-name"] for block in blocks] == [f["name"] for f in manifest["features"]]
    for feature in manifest["features"]:
        block, box = feature_control(page, feature["name"])
        assert block["data-type"] == feature["type"]
        assert box["type"] == "number" and box["name"] == feature["name"]
        assert page.labels[box["id"]] == feature["name"]
        # The observed range guides the slider; only declared limits bound the box.
        assert "min" not in box and "max" not in box
        assert number(box["value"]) == feature["typical"]
        assert box["step"] == ("1" if feature["type"] == "int" else "any")
        slider = page.by_id(f"{box['id']}-range")
        assert slider["type"] == "range" and slider["data-slider-for"] == box["id"]
        assert page.labels[slider["id"]].startswith(feature["name"])
        assert (number(slider["min"]), number(slider["max"])) == (feature["min"], feature["max"])
        assert number(slider["value"]) == feature["typical"]
        if feature["type"] == "int":
            assert slider["step"] == "1"
        if feature.get("description"):
            hint = page.by_id(f"{box['id']}-hint")
            assert hint["id"] in box["aria-describedby"].split()
            assert feature["description"] in page.words
        # The API's error message for this control goes right next to it.
        assert f"{box['id']}-error" in box["aria-describedby"].split()
        assert page.by_id(f"{box['id']}-error")["class"] == "field-error"


def test_classifier_page_has_a_bar_per_class(client: FlaskClient) -> None:
    _, page = get_page(client, "/models/iris")
    assert [bar["data-class"] for bar in page.find("li", **{"class": "bar"})] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    _, regression = get_page(client, "/models/diabetes")
    assert not regression.find("li", **{"class": "bar"})


def test_every_kind_of_feature_gets_its_control(mixed: FlaskClient) -> None:
    manifest = mixed.get("/v1/models/mixed").get_json()
    features = {feature["name"]: feature for feature in manifest["features"]}
    assert {name: f["type"] for name, f in features.items()} == {
        "count": "int",
        "size": "float",
        "colour": "category",
        "flag": "bool",
    }
    _, page = get_page(mixed, "/models/mixed")
    blocks = [attributes for tag, attributes in page.elements if tag == "div" and "data-name" in attributes]
    assert [block["data-name"] for block in blocks] == [f["name"] for f in manifest["features"]]

    _, count = feature_control(page, "count")
    assert count["step"] == "1" and "min" not in count and "max" not in count
    assert count["value"] == str(features["count"]["typical"])
    count_slider = page.by_id(f"{count['id']}-range")
    assert (count_slider["min"], count_slider["max"], count_slider["step"]) == (
        str(features["count"]["min"]),
        str(features["count"]["max"]),
        "1",
    )
    assert "Items in the parcel" in page.words and page.find("span", **{"class": "unit"})

    # No range in the manifest: a number box and no slider.
    _, size = feature_control(page, "size")
    assert size["type"] == "number" and "min" not in size and "max" not in size
    assert not page.find(id=f"{size['id']}-range")
    assert number(size["value"]) == features["size"]["typical"]
    assert page.labels[size["id"]] == "size"

    _, colour = feature_control(page, "colour")
    assert colour["name"] == "colour" and page.labels[colour["id"]] == "colour"
    options = page.options[colour["id"]]
    assert [value for value, _ in options] == list(MIXED_COLOURS)
    assert [value for value, selected in options if selected] == [features["colour"]["typical"]]

    _, flag = feature_control(page, "flag")
    assert flag["type"] == "checkbox" and page.labels[flag["id"]] == "flag"
    assert ("checked" in flag) is features["flag"]["typical"]


def test_every_control_has_a_label(client: FlaskClient, mixed: FlaskClient) -> None:
    for tester, path in [(client, f"/models/{name}") for name in DEMO_MODELS] + [(mixed, "/models/mixed")]:
        _, page = get_page(tester, path)
        controls = [
            attributes
            for tag, attributes in page.elements
            if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden"
        ]
        assert controls
        for control in controls:
            assert control.get("id") in page.labels, (path, control)
        ids = [attributes["id"] for _, attributes in page.elements if "id" in attributes]
        assert len(ids) == len(set(ids)), path


def test_unknown_model_is_a_404_page_for_browsers_and_a_problem_for_programs(client: FlaskClient) -> None:
    browser = client.get("/models/nope", headers=BROWSER)
    assert browser.status_code == 404 and browser.mimetype == "text/html"
    assert "nope" in Page(browser.get_data(as_text=True)).words
    assert "Content-Security-Policy" in browser.headers
    for headers in (JSON_CLIENT, {}):
        program = client.get("/models/nope", headers=headers)
        assert program.status_code == 404 and program.mimetype == "application/problem+json"
        assert program.get_json()["type"] == "/problems/model-not-found"


def test_json_clients_of_a_model_page_get_its_metadata(client: FlaskClient) -> None:
    response = client.get("/models/iris", headers=JSON_CLIENT)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == client.get("/v1/models/iris").get_json()


def test_a_model_that_is_not_ready_says_why(store_path: Path, make_app: Callable[..., Flask]) -> None:
    artifact = store_path / "diabetes" / "1" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    client = make_app(model_store=store_path).test_client()
    response = client.get("/models/diabetes", headers=BROWSER)
    assert response.status_code == 503 and response.mimetype == "text/html"
    assert "SHA-256" in Page(response.get_data(as_text=True)).words
    _, home = get_page(client, "/")
    assert "Not ready" in home.words and "SHA-256" in home.words
    listed = {model["name"]: model for model in client.get("/", headers=JSON_CLIENT).get_json()["models"]}
    assert listed["diabetes"]["ready"] is False and "SHA-256" in listed["diabetes"]["error"]
    assert listed["iris"]["ready"] is True


# --- Assets, security, and the switch -----------------------------------------------------

PAGES = ["/", "/models/iris", "/models/diabetes", "/models/breast_cancer", "/models/nope"]
# The SVG namespace names a specification; nothing is fetched from it.
SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


def local_assets(page: Page) -> set[str]:
    return {
        attributes[key]
        for tag, attributes in page.elements
        for key in ("src", "href")
        if tag in ("script", "link", "img") and key in attributes
    }


def test_no_page_references_an_external_url(client: FlaskClient) -> None:
    assets: set[str] = set()
    for path in PAGES:
        response = client.get(path, headers=BROWSER)
        html = response.get_data(as_text=True)
        assert not re.search(r"https?:|//[a-z]", html.replace(SVG_NAMESPACE, ""), re.IGNORECASE), path
        assets |= local_assets(Page(html))
    assert {asset.split("?")[0] for asset in assets} == {
        "/static/pages.css",
        "/static/pages.js",
        "/static/favicon.svg",
    }
    for asset in sorted(assets):
        response = client.get(asset)
        assert response.status_code == 200, asset
        text = response.get_data(as_text=True).replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://", text), asset
        # No CSS import or url() that leaves the service either.
        assert "@import" not in text and "url(http" not in text and "url(//" not in text


def test_pages_set_a_content_security_policy_allowing_only_self(client: FlaskClient) -> None:
    for path in PAGES:
        response = client.get(path, headers=BROWSER)
        policy = response.headers.get("Content-Security-Policy", "")
        directives = dict((part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip())
        assert directives["default-src"] == ["'self'"], path
        for name in ("script-src", "style-src", "connect-src", "img-src"):
            assert directives[name] == ["'self'"], (path, name)
        for sources in directives.values():
            assert set(sources) <= {"'self'", "'none'"}, (path, policy)


def test_no_inline_script_or_style(client: FlaskClient) -> None:
    """The policy forbids them, so the pages must not need them."""
    for path in PAGES:
        page = Page(client.get(path, headers=BROWSER).get_data(as_text=True))
        assert all("src" in attributes for tag, attributes in page.elements if tag == "script"), path
        assert not any(tag == "style" or "style" in attributes for tag, attributes in page.elements), path
        assert not any(name.startswith("on") for _, attributes in page.elements for name in attributes)


def test_demo_off_turns_the_pages_off(demo_store_path: Path, make_app: Callable[..., Flask]) -> None:
    client = make_app(model_store=demo_store_path, demo=False).test_client()
    for path in ("/", "/models/iris", "/static/pages.css"):
        for headers in (BROWSER, JSON_CLIENT):
            response = client.get(path, headers=headers)
            assert response.status_code == 404, (path, headers)
            assert response.mimetype == "application/problem+json"
    assert client.post("/v1/models/iris/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200
    document = client.get("/openapi.json").get_json()
    assert "/" not in document["paths"] and "/models/{name}" not in document["paths"]


def test_the_page_and_programs_share_one_prediction_route(client: FlaskClient) -> None:
    """The page's script posts to the URL the form names; that URL is the JSON prediction route."""
    _, page = get_page(client, "/models/iris")
    url = page.one("form", id="predict-form")["data-predict-url"]
    adapter = client.application.url_map.bind("localhost")
    assert adapter.match(url, method="POST") == ("predict.predict", {"name": "iris"})
    script = client.get("/static/pages.js").get_data(as_text=True)
    assert script.count("fetch(") == 2  # one for a row, one for a file
    assert "fetch(predictUrl" in script and "fetch(csvUrl" in script


# --- Where the typical row and the metrics come from --------------------------------------


@pytest.fixture(scope="module")
def unsampled(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlaskClient, dict[str, Any]]:
    """Two iris models added without a sample: a tree, which keeps no statistics of its inputs, and
    a scaled logistic regression, whose scaler learned the means. (client, {name: estimator})."""
    root = tmp_path_factory.mktemp("unsampled_store")
    X, y = load_iris(return_X_y=True)
    models = {
        "tree": DecisionTreeClassifier(random_state=0).fit(X, y),
        "scaled": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y),
    }
    for name, model in models.items():
        store_model(root, model, name, "1")
    built = create_app(Settings(model_store=root))
    built.config["TESTING"] = True
    return built.test_client(), models


def test_the_page_says_where_its_typical_row_comes_from(client: FlaskClient) -> None:
    _, page = get_page(client, "/models/iris")
    assert "The form opens with a typical row of the training data" in page.words
    assert "Reset to typical row" in page.words


def test_without_a_typical_row_the_page_says_so(unsampled: tuple[FlaskClient, dict[str, Any]]) -> None:
    client, _ = unsampled
    _, page = get_page(client, "/models/tree")
    assert "No typical row is known for this model" in page.words
    assert "typical row of the" not in page.words
    assert "Reset to placeholder values" in page.words


def test_a_typical_row_learned_by_the_estimator_is_named(
    unsampled: tuple[FlaskClient, dict[str, Any]],
) -> None:
    client, models = unsampled
    _, page = get_page(client, "/models/scaled")
    assert "The form opens with values the model learned in training: the means StandardScaler learned." in (
        page.words
    )
    means = models["scaled"].named_steps["standardscaler"].mean_
    for index, mean in enumerate(means):
        _, box = feature_control(page, f"x{index}")
        assert number(box["value"]) == pytest.approx(mean, rel=1e-5)


def test_metrics_are_labelled_with_what_they_were_measured_on(client: FlaskClient) -> None:
    _, home = get_page(client, "/")
    listed = client.get("/", headers=JSON_CLIENT).get_json()["models"]
    for model in listed:
        test_rows = client.get(f"/v1/models/{model['name']}").get_json()["dataset"]["test_rows"]
        label = f"measured on {test_rows} held-out rows"
        assert model["metrics_label"] == label
        assert client.get(f"/v1/models/{model['name']}").get_json()["metrics_label"] == label
        _, page = get_page(client, f"/models/{model['name']}")
        assert f"Metrics {label}." in page.words
    assert home.words.count("Metrics measured on") == len(listed)
    assert "Metrics measured on 38 held-out rows." in home.words  # iris: 150 rows, a quarter held out


def test_metrics_measured_on_a_sample_say_it_and_unlabelled_metrics_claim_nothing(
    store_path: Path, make_app: Callable[..., Flask]
) -> None:
    edit_manifest(store_path / "iris" / "1", evaluation={"data": "sample", "rows": 150, "source": "iris.csv"})
    document = json.loads((store_path / "diabetes" / "1" / "model.json").read_text())
    del document["evaluation"]
    (store_path / "diabetes" / "1" / "model.json").write_text(json.dumps(document))
    client = make_app(model_store=store_path).test_client()
    label = "measured on the 150-row sample given when the model was added, which may include training rows"
    assert client.get("/v1/models/iris").get_json()["metrics_label"] == label
    _, iris = get_page(client, "/models/iris")
    assert f"Metrics {label}." in iris.words

    assert "metrics_label" not in client.get("/v1/models/diabetes").get_json()
    _, diabetes = get_page(client, "/models/diabetes")
    assert not diabetes.find(id="metrics-label")
    assert f"{document['metrics']['r2']:.4g}" in diabetes.words  # shown, without a claim


def test_where_a_typical_row_came_from_is_escaped(store_path: Path, make_app: Callable[..., Flask]) -> None:
    """The source text comes from the estimator (class names in a pickle): it is shown, never run."""
    hostile = '<img src=x onerror="alert(1)">'
    edit_manifest(store_path / "iris" / "1", typical_row={"kind": "estimator", "source": hostile})
    _, page = get_page(make_app(model_store=store_path).test_client(), "/models/iris")
    assert f"learned in training: {hostile}." in page.words
    assert not page.find("img", src="x")
