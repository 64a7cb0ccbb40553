"""The docs pages (/docs, /redoc) treat every text a model brings as untrusted.

A model's description, feature names, feature descriptions, units, categories
and class labels are whatever its author typed. On the docs pages they must show
as text, never run and never become markup. The headers are checked with the
test client; the rendering in real headless Chromium (Debian's, installed by
`make browser-deps`) against a live Gunicorn server serving a model whose every
text is hostile.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import joblib
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from markdown_it import MarkdownIt
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.app import create_app
from service.config import Settings
from service.models import ModelStore
from service.models.introspect import describe_estimator
from service.models.manifest import Manifest
from tests.browsers import TIMEOUT_MS, chromium
from tests.servers import Server, running_server

HOSTILE_MODEL = "hostile"
BEACON = "/beacon"


def hostile(place: str) -> str:
    """A text that calls BEACON/PLACE if a page treats it as HTML or Markdown: as an
    image's onerror, as a script, and as a javascript: link."""
    beacon = f"{BEACON}/{place}"
    return (
        f"{place} <img src=x onerror=\"fetch('{beacon}')\"> <script>fetch('{beacon}')</script> "
        f"[x](javascript:fetch('{beacon}'))"
    )


NUMBER, CATEGORY = hostile("number"), hostile("category")  # feature names
CATEGORIES = (hostile("category-a"), hostile("category-b"))
LABELS = (hostile("label-a"), hostile("label-b"))
DOCS_PAGES = ("/docs", "/redoc")


def store_hostile_model(root: Path) -> Manifest:
    """A classifier with hostile texts in every place a manifest carries text; returns its manifest.

    Feature names must be the estimator's own (``feature_names_in_``), so it is
    fitted on a frame whose columns are the hostile names.
    """
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({NUMBER: rng.normal(size=40), CATEGORY: rng.choice(CATEGORIES, size=40)})
    labels = np.where(frame[NUMBER] > 0, LABELS[0], LABELS[1])
    estimator = make_pipeline(
        ColumnTransformer([("encode", OneHotEncoder(), [CATEGORY])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(frame, labels)
    manifest = describe_estimator(
        estimator,
        name=HOSTILE_MODEL,
        version="1",
        sample=frame,
        description=hostile("model"),
        notes={
            NUMBER: (hostile("number-description"), hostile("number-unit")),
            CATEGORY: (hostile("category-description"), hostile("category-unit")),
        },
    )
    scratch = root / "hostile.joblib"
    joblib.dump(estimator, scratch)
    try:
        ModelStore(root).add(scratch, manifest)
    finally:
        scratch.unlink()
    return manifest


# --- The pages' headers and HTML -----------------------------------------------------


def policy_of(response: Any) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_pages_run_no_inline_script(client: FlaskClient, path: str) -> None:
    policy = policy_of(client.get(path))
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    for directive in ("object-src", "base-uri", "frame-ancestors"):
        assert policy[directive] == ["'none'"], directive
    # Only styles may be inline (both UIs set them); nothing may be evaluated from a string.
    for directive, sources in policy.items():
        assert "'unsafe-eval'" not in sources, directive
        assert "'unsafe-inline'" not in sources or directive == "style-src", directive


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_pages_send_the_headers_the_people_pages_send(client: FlaskClient, path: str) -> None:
    people_page = client.get("/", headers={"Accept": "text/html"})
    response = client.get(path)
    for header in ("X-Content-Type-Options", "Referrer-Policy"):
        assert response.headers[header] == people_page.headers[header], header
    assert response.headers["X-Content-Type-Options"] == "nosniff"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside each <script>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.script_texts: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_texts.append(data)


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_docs_pages_load_every_script_from_a_file_of_the_service(client: FlaskClient, path: str) -> None:
    page = Elements(client.get(path).get_data(as_text=True))
    scripts = [attributes for tag, attributes in page.elements if tag == "script"]
    assert scripts and all(attributes.get("src") for attributes in scripts)
    assert not "".join(page.script_texts).strip()
    assert not [name for _, attributes in page.elements for name in attributes if name.startswith("on")]
    for attributes in scripts:
        assert client.get(attributes["src"]).status_code == 200, attributes["src"]


def test_redoc_treats_the_document_as_untrusted(client: FlaskClient) -> None:
    """ReDoc then sanitises the HTML it renders from descriptions (DOMPurify)."""
    page = Elements(client.get("/redoc").get_data(as_text=True))
    (redoc,) = [attributes for tag, attributes in page.elements if tag == "redoc"]
    assert redoc.get("untrusted-spec") not in (None, "false")


def test_redoc_bundle_takes_its_logo_from_the_service(client: FlaskClient) -> None:
    bundle = client.get("/docs/assets/redoc/redoc.standalone.js")
    assert bundle.status_code == 200 and bundle.mimetype == "text/javascript"
    source = bundle.get_data(as_text=True)
    assert "cdn.redoc.ly" not in source
    logo = "/docs/assets/redoc/logo-mini.svg"
    assert f'"{logo}"' in source
    assert client.get(logo).mimetype == "image/svg+xml"
    again = client.get(
        "/docs/assets/redoc/redoc.standalone.js", headers={"If-None-Match": bundle.headers["ETag"]}
    )
    assert again.status_code == 304


# --- The document a hostile model gets -------------------------------------------------


@pytest.fixture(scope="module")
def hostile_document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = tmp_path_factory.mktemp("hostile_store")
    store_hostile_model(store)
    app = create_app(Settings(model_store=store, default_model=HOSTILE_MODEL))
    return app.test_client().get("/openapi.json").get_json()


def descriptions(node: Any) -> Iterator[str]:
    """Every description in the document: each is CommonMark, rendered as HTML by the UIs."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from descriptions(value)
    elif isinstance(node, list):
        for item in node:
            yield from descriptions(item)


def test_every_description_renders_model_texts_as_text(hostile_document: dict[str, Any]) -> None:
    commonmark = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    rendered = [commonmark.render(text) for text in descriptions(hostile_document)]
    for markup in rendered:
        assert "<img" not in markup and "<script" not in markup and "<a " not in markup, markup
    shown = unescape("\n".join(rendered))
    # The feature names are in the description of a row given as a list.
    texts = [hostile("model"), hostile("number-description"), hostile("category-description"), NUMBER]
    assert [text for text in texts if text not in shown] == []


def test_model_texts_stay_exact_where_they_are_data(hostile_document: dict[str, Any]) -> None:
    """Feature names, categories and class labels are JSON values there, not Markdown."""
    schemas = hostile_document["components"]["schemas"]
    row = schemas[f"{HOSTILE_MODEL}.Row"]["properties"]
    assert list(row) == [NUMBER, CATEGORY]
    assert row[CATEGORY]["enum"] == list(CATEGORIES)
    assert schemas[f"{HOSTILE_MODEL}.Prediction"]["properties"]["prediction"]["enum"] == list(LABELS)
    assert sorted(schemas[f"{HOSTILE_MODEL}.Probabilities"]["properties"]) == sorted(LABELS)


# --- In a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = tmp_path_factory.mktemp("hostile_server_store")
    store_hostile_model(store)
    with running_server(
        store,
        tmp_path_factory.mktemp("hostile_server"),
        SERVICE_WORKERS="1",
        SERVICE_DEFAULT_MODEL=HOSTILE_MODEL,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile-docs"), viewport={"width": 1280, "height": 900}
    ) as context:
        yield context


@pytest.fixture
def page(browser: Any, hostile_server: Server) -> Iterator[Any]:
    """A page; afterwards no request may have reached a beacon, in the browser or at the server."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    yield page
    page.close()
    beacons = [url for url in sent if BEACON in urlsplit(url).path]
    assert not beacons, beacons
    elsewhere = [
        url for url in sent if url.startswith("http") and not url.startswith(hostile_server.url("/"))
    ]
    assert not elsewhere, elsewhere
    served = [str(record["path"]) for record in hostile_server.access_log()]
    assert not [path for path in served if BEACON in path], served


def assert_shown_as_text(page: Any, texts: list[str]) -> None:
    """Each text is on the page literally, and no part of any became an element."""
    page.wait_for_load_state("networkidle")
    shown = page.evaluate("document.body.innerText")
    missing = [text for text in texts if text not in shown]
    assert not missing, missing
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert page.locator('a[href^="javascript:" i]').count() == 0


# What each page must show literally once unfolded: both UIs show a category or a
# label as a JSON string where it is an allowed value. (Units are on neither page.)
SHOWN_TEXTS = [
    hostile("model"),
    NUMBER,
    CATEGORY,
    hostile("number-description"),
    hostile("category-description"),
    *LABELS,
    *[json.dumps(value) for value in (*CATEGORIES, *LABELS)],
]


@pytest.mark.integration
def test_swagger_ui_shows_model_texts_as_text(page: Any, hostile_server: Server) -> None:
    page.goto(hostile_server.url("/docs"))
    operation = page.locator(f"#operations-{HOSTILE_MODEL}-predict_predict_{HOSTILE_MODEL}")
    operation.locator(".opblock-summary").click()
    operation.locator(".opblock-description").wait_for()
    # Every schema, unfolded: feature names, descriptions, categories, class labels.
    schemas = page.locator(
        "section.models article[data-json-schema-level='0'] > .json-schema-2020-12-head"
        " > .json-schema-2020-12-expand-deep-button"
    )
    for index in range(schemas.count()):
        schemas.nth(index).click()
    assert_shown_as_text(page, SHOWN_TEXTS)


@pytest.mark.integration
def test_redoc_shows_model_texts_as_text(page: Any, hostile_server: Server) -> None:
    page.goto(hostile_server.url("/redoc"))
    operation = page.locator(f'[data-section-id="operation/predict_predict_{HOSTILE_MODEL}"]')
    operation.wait_for()
    # The answer's schema, with the class labels, is folded until its status is clicked.
    operation.locator("button", has_text="200").first.click()
    assert_shown_as_text(page, SHOWN_TEXTS)
