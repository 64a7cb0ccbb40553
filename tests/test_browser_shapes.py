"""The model page of each task in a real headless Chromium, against the live Gunicorn server.

A model with several targets shows one value per target, an outlier detector
whether the row is an outlier and its score, a clusterer the cluster: each the
JSON API's own answer for the typical row the page opens with.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browsers import TIMEOUT_MS, chromium
from tests.servers import Server, http, post_json
from tests.shapes import clusterers, multi_output_regressors, outlier_detectors, serving

pytestmark = pytest.mark.integration

SHAPES = {
    shape.name: shape
    for shape in (*multi_output_regressors(), *outlier_detectors(), *clusterers())
    if shape.name in ("linnerud_named", "wine_isolation_forest", "iris_kmeans")
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(SHAPES.values(), tmp_path_factory, SERVICE_WORKERS="1") as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile-shapes")) as context:
        yield context


def opened(browser: Any, server: Server, name: str) -> tuple[Any, dict[str, Any]]:
    """The model's page once it shows its first answer, and the API's answer for the same typical row."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url(f"/models/{name}"))
    page.wait_for_function("() => document.getElementById('result-meta').textContent.includes('version')")
    assert not errors, errors
    manifest = http("GET", server.url(f"/v1/models/{name}")).json()
    typical = {feature["name"]: feature["typical"] for feature in manifest["features"]}
    answer = post_json(server, f"/v1/models/{name}/predict", typical)
    assert answer.status_code == 200, answer.text
    return page, answer.json()


def test_a_multi_output_page_shows_each_targets_value(browser: Any, server: Server) -> None:
    page, answer = opened(browser, server, "linnerud_named")
    shown = page.eval_on_selector_all(
        "#result-targets [data-target]", "values => values.map(v => [v.dataset.target, v.title])"
    )
    assert [name for name, _ in shown] == list(answer["prediction"])
    assert {name: float(value) for name, value in shown} == answer["prediction"]
    page.close()


def test_an_outlier_detector_page_shows_the_verdict_and_score(browser: Any, server: Server) -> None:
    page, answer = opened(browser, server, "wine_isolation_forest")
    verdict = "Outlier" if answer["prediction"] == -1 else "Inlier"
    assert page.locator("#result-label").text_content().strip() == verdict
    assert page.locator("#result-score").text_content().startswith("Score ")
    page.close()


def test_a_clusterer_page_shows_the_cluster(browser: Any, server: Server) -> None:
    page, answer = opened(browser, server, "iris_kmeans")
    assert page.locator("#result-label").text_content().strip() == f"Cluster {answer['prediction']}"
    page.close()
