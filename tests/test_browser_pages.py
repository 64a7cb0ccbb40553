"""The pages for people in a real headless Chromium, against the live Gunicorn server.

The iris page must predict as its controls change, without a page load, through
the JSON API; show the API's validation errors next to the control they name;
give the exact request as curl; and predict a whole CSV file for download. No
request may leave 127.0.0.1. Set SCREENSHOTS_DIR to keep the screenshots
(`make screenshots` writes docs/home-*.png and docs/iris-*.png).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.browsers import TIMEOUT_MS, chromium
from tests.servers import Server, http, post_json, running_server

pytestmark = pytest.mark.integration

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.9, 3.1, 5.4, 2.1]
CSV_ROWS = 200
CSV_SEED = 20261125


@pytest.fixture(scope="module")
def pages_server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        demo_store_path, tmp_path_factory.mktemp("pages_server"), SERVICE_WORKERS="1"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile-pages"), viewport=DESKTOP, accept_downloads=True
    ) as context:
        yield context


@pytest.fixture
def sent() -> list[Any]:
    """Every request the page sends, as playwright Request objects."""
    return []


@pytest.fixture
def page(browser: Any, pages_server: Server, sent: list[Any]) -> Iterator[Any]:
    """A page that records every request; afterwards, none may have left the test server."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.set_viewport_size(DESKTOP)
    blocked: list[str] = []
    console_errors: list[str] = []
    page.on("request", lambda request: sent.append(request))
    # The page's Content-Security-Policy stops a request before it leaves the browser.
    page.on("requestfailed", lambda request: request.failure == "csp" and blocked.append(request.url))
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))
    page.on("pageerror", lambda error: console_errors.append(str(error)))
    yield page
    page.close()
    urls = [request.url for request in sent]
    hosts = {urlsplit(url).netloc for url in urls if url.startswith("http") and url not in blocked}
    assert hosts <= {f"127.0.0.1:{pages_server.port}"}, hosts
    assert not blocked, blocked
    # A 422 is logged by Chromium as a failed resource; anything else is a fault of the page.
    assert all("422" in text for text in console_errors), console_errors


# --- Helpers -------------------------------------------------------------------------


def box(page: Any, feature: str) -> Any:
    return page.locator(f'.field[data-name="{feature}"] input[type=number]')


def field_error(page: Any, feature: str) -> Any:
    return page.locator(f'.field[data-name="{feature}"] .field-error')


def set_row(page: Any, values: list[float]) -> None:
    for feature, value in zip(FEATURES, values, strict=True):
        box(page, feature).fill(str(value))


def wait_for_answer(page: Any, label: str) -> None:
    """Until the page shows ``label`` as a fresh (not pending) answer."""
    page.wait_for_function(
        """label => {
             const result = document.getElementById('result');
             return !result.classList.contains('is-pending')
                 && !result.classList.contains('is-stale')
                 && document.getElementById('result-label').textContent.trim() === label;
           }""",
        arg=label,
        timeout=TIMEOUT_MS,
    )


def open_iris(page: Any, server: Server) -> None:
    page.goto(server.url("/models/iris"))
    page.wait_for_function("() => document.getElementById('result-meta').textContent.includes('version')")


def bars(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#bars .bar",
        """bars => bars.map(bar => ({
             name: bar.dataset.class,
             probability: Number(bar.dataset.probability),
             shown: bar.querySelector('.bar-value').textContent.trim(),
             width: bar.querySelector('.bar-fill').style.width,
             predicted: bar.classList.contains('is-predicted'),
           }))""",
    )


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """The viewport as a person sees it, transitions finished and no focus ring on a control."""
    directory = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(path), full_page=False, animations="disabled")
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def fits_the_width(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def predict_requests(sent: list[Any], server: Server) -> list[Any]:
    return [
        request
        for request in sent
        if request.method == "POST" and request.url == server.url("/v1/models/iris/predict")
    ]


# --- The home page -------------------------------------------------------------------


def test_home_page_lists_the_models(page: Any, pages_server: Server, tmp_path: Path) -> None:
    page.goto(pages_server.url("/"))
    assert page.locator("h1").inner_text() == "scikit-learn model service"
    models = http("GET", pages_server.url("/v1/models")).json()["models"]
    for model in models:
        link = page.locator(f'.model-card h3 a[href="/models/{model["name"]}"]')
        assert link.inner_text() == model["name"]
    assert page.locator(".model-card .badge-ok").count() == len(models)
    assert page.locator('a[href="/docs"]').first.is_visible()
    assert page.locator('a[href="/metrics"]').first.is_visible()
    screenshot(page, "home-desktop.png", tmp_path)

    page.set_viewport_size(PHONE)
    assert fits_the_width(page)
    screenshot(page, "home-phone.png", tmp_path)

    # Keyboard: the first Tab reaches the skip link, and following a model's link opens its page.
    page.set_viewport_size(DESKTOP)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.locator('.model-card h3 a[href="/models/iris"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_url(pages_server.url("/models/iris"))


# --- The iris page -------------------------------------------------------------------


def test_iris_page_predicts_as_the_form_changes(
    page: Any, pages_server: Server, sent: list[Any], tmp_path: Path
) -> None:
    open_iris(page, pages_server)
    typical = [float(box(page, feature).input_value()) for feature in FEATURES]
    manifest = http("GET", pages_server.url("/v1/models/iris")).json()
    assert typical == [feature["typical"] for feature in manifest["features"]]

    set_row(page, SETOSA)
    wait_for_answer(page, "setosa")
    shown = bars(page)
    assert [bar["name"] for bar in shown] == ["setosa", "versicolor", "virginica"]
    assert sum(bar["probability"] for bar in shown) == pytest.approx(1.0, abs=1e-9)
    assert sum(float(bar["shown"].rstrip("%")) for bar in shown) == pytest.approx(100.0, abs=0.2)
    assert [bar["predicted"] for bar in shown] == [True, False, False]
    answer = post_json(pages_server, "/v1/models/iris/predict", {"features": SETOSA}).json()
    assert [bar["probability"] for bar in shown] == pytest.approx(
        [answer["probabilities"][name] for name in ("setosa", "versicolor", "virginica")], abs=1e-12
    )
    meta = page.locator("#result-meta").inner_text()
    assert "version 1" in meta and " ms" in meta

    # The answer changes without a page load: a marker set now survives the change.
    page.evaluate("window.__stillTheSamePage = 'yes'")
    before = len(predict_requests(sent, pages_server))
    box(page, "petal_length").fill("")
    box(page, "petal_length").type("5.4", delay=20)  # one prediction after the typing stops
    for feature, value in zip(FEATURES, VIRGINICA, strict=True):
        if feature != "petal_length":
            box(page, feature).fill(str(value))
    wait_for_answer(page, "virginica")
    assert page.evaluate("window.__stillTheSamePage") == "yes"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    requests_made = len(predict_requests(sent, pages_server)) - before
    assert 1 <= requests_made <= 3, requests_made  # debounced: not one per keystroke (6 changes)
    shown = bars(page)
    assert [bar["predicted"] for bar in shown] == [False, False, True]
    assert sum(bar["probability"] for bar in shown) == pytest.approx(1.0, abs=1e-9)

    # The slider follows its number box.
    assert float(page.locator(f"#{box(page, 'petal_length').get_attribute('id')}-range").input_value()) == 5.4
    screenshot(page, "iris-desktop.png", tmp_path)

    page.set_viewport_size(PHONE)
    page.evaluate("window.scrollTo(0, 0)")
    assert fits_the_width(page)
    assert page.locator("#result-label").is_visible()
    screenshot(page, "iris-phone.png", tmp_path)


def test_sliders_work_from_the_keyboard(page: Any, pages_server: Server) -> None:
    open_iris(page, pages_server)
    wait_for_answer(page, page.locator("#result-label").inner_text().strip())
    number = box(page, "petal_width")
    slider = page.locator(f"#{number.get_attribute('id')}-range")
    slider.focus()
    page.keyboard.press("End")
    assert number.input_value() == slider.get_attribute("max")
    wait_for_answer(page, "virginica")
    page.keyboard.press("Home")
    assert float(number.input_value()) == float(slider.get_attribute("min"))
    page.wait_for_function("() => !document.getElementById('result').classList.contains('is-pending')")

    # "Reset to typical row" puts the typical row back, sliders included, and predicts it.
    page.locator("#reset-row").focus()
    page.keyboard.press("Enter")
    typical = http("GET", pages_server.url("/v1/models/iris")).json()["features"][3]["typical"]
    page.wait_for_function(
        "typical => Number(document.querySelector('.field[data-name=petal_width] input[type=range]').value)"
        " === typical",
        arg=typical,
    )
    assert float(number.input_value()) == typical
    wait_for_answer(page, "versicolor")


def test_errors_and_warnings_show_next_to_their_control(page: Any, pages_server: Server) -> None:
    open_iris(page, pages_server)
    set_row(page, SETOSA)
    wait_for_answer(page, "setosa")

    # Far outside the training data: still predicted, and the control says so.
    box(page, "petal_length").fill("100")
    expected = post_json(pages_server, "/v1/models/iris/predict", {"features": [5.1, 3.5, 100, 0.2]}).json()
    wait_for_answer(page, expected["prediction"])
    warning = page.locator('.field[data-name="petal_length"] .field-warning')
    warning.wait_for(state="visible")
    assert warning.inner_text().strip().endswith(" ".join(expected["warnings"]["petal_length"]))
    assert "7.48" in warning.inner_text()
    assert not field_error(page, "petal_length").is_visible()

    # Left empty (iris has no missing values): the API's error, right under its own control.
    box(page, "petal_length").fill("")
    error = field_error(page, "petal_length")
    error.wait_for(state="visible")
    refused = post_json(pages_server, "/v1/models/iris/predict", {"features": [5.1, 3.5, None, 0.2]}).json()
    assert error.inner_text().strip() == " ".join(refused["errors"]["petal_length"])
    assert not warning.is_visible()
    assert box(page, "petal_length").get_attribute("aria-invalid") == "true"
    for feature in FEATURES:
        if feature != "petal_length":
            assert not field_error(page, feature).is_visible()
    control = box(page, "petal_length").bounding_box()
    message = error.bounding_box()
    assert 0 <= message["y"] - (control["y"] + control["height"]) < 40
    assert abs(message["x"] - page.locator('.field[data-name="petal_length"]').bounding_box()["x"]) < 2

    box(page, "petal_length").fill("1.4")
    wait_for_answer(page, "setosa")
    assert not error.is_visible() and not warning.is_visible()
    assert box(page, "petal_length").get_attribute("aria-invalid") is None


def test_copy_as_curl_gives_the_request_the_page_sent(
    browser: Any, page: Any, pages_server: Server, sent: list[Any]
) -> None:
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=pages_server.base_url)
    open_iris(page, pages_server)
    set_row(page, VIRGINICA)
    wait_for_answer(page, "virginica")
    page.locator("#copy-curl").click()
    page.locator("#copy-status").filter(has_text="Copied").wait_for()
    command = page.evaluate("navigator.clipboard.readText()")
    assert command == page.locator("#curl").text_content()

    last = predict_requests(sent, pages_server)[-1]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["curl", "-s", pages_server.url("/v1/models/iris/predict")]
    assert words[3:5] == ["-H", "Content-Type: application/json"]
    assert words[5] == "-d" and words[6] == last.post_data
    assert json.loads(words[6]) == {"features": dict(zip(FEATURES, VIRGINICA, strict=True))}
    # Run it (as the curl command would) and get the answer the page shows.
    answer = http("POST", words[2], data=words[6], headers=dict([words[4].split(": ", 1)])).json()
    assert answer["prediction"] == page.locator("#result-label").inner_text().strip()


# --- A whole file ----------------------------------------------------------------------


def iris_rows(server: Server) -> list[list[float]]:
    """CSV_ROWS rows drawn within the manifest's ranges, with a fixed seed."""
    manifest = http("GET", server.url("/v1/models/iris")).json()
    rng = np.random.default_rng(CSV_SEED)
    columns = [
        np.round(rng.uniform(feature["min"], feature["max"], size=CSV_ROWS), 2)
        for feature in manifest["features"]
    ]
    return [[float(value) for value in row] for row in zip(*columns, strict=True)]


def csv_bytes(rows: list[list[Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(FEATURES)
    writer.writerows(rows)
    return text.getvalue().encode()


def test_a_csv_file_is_predicted_for_download(page: Any, pages_server: Server, sent: list[Any]) -> None:
    rows = iris_rows(pages_server)
    open_iris(page, pages_server)
    page.set_input_files(
        "#csv-file", files=[{"name": "flowers.csv", "mimeType": "text/csv", "buffer": csv_bytes(rows)}]
    )
    link = page.locator("#csv-download")
    link.wait_for(state="visible")
    assert any(
        request.method == "POST"
        and request.url == pages_server.url("/v1/models/iris/predict/csv?stream=false")
        for request in sent
    )
    assert f"{CSV_ROWS} rows predicted" in page.locator("#csv-status").inner_text()
    # The preview: the first 20 rows, with the prediction and probability columns.
    header = page.locator("#csv-preview thead th").all_inner_texts()
    assert header[1 : 1 + len(FEATURES)] == FEATURES
    assert "prediction" in header and "probability_setosa" in header
    assert page.locator("#csv-preview tbody tr").count() == 20
    assert page.locator("#csv-errors").is_hidden()

    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    downloaded = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert len(downloaded) == CSV_ROWS

    answer = post_json(pages_server, "/v1/models/iris/predict/batch", rows).json()
    assert [row["prediction"] for row in downloaded] == answer["predictions"]
    for row, probabilities, sent_row in zip(downloaded, answer["probabilities"], rows, strict=True):
        assert [float(row[name]) for name in FEATURES] == sent_row
        for label, probability in probabilities.items():
            assert float(row[f"probability_{label}"]) == pytest.approx(probability, abs=1e-9)
        assert row["error"] == ""


def test_bad_rows_in_a_csv_file_are_shown_with_their_line(page: Any, pages_server: Server) -> None:
    rows: list[list[Any]] = [list(SETOSA), list(VIRGINICA), [5.1, 3.5, "long", 0.2]]
    open_iris(page, pages_server)
    page.set_input_files(
        "#csv-file", files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": csv_bytes(rows)}]
    )
    errors = page.locator("#csv-error-list li")
    errors.first.wait_for()
    text = " ".join(errors.all_inner_texts())
    assert "Row 3 (line 4)" in text and "petal_length" in text, text  # the header is line 1
    # The good rows are scored all the same: the file can be downloaded with the bad row in place.
    page.locator("#csv-download").wait_for(state="visible")
    status = page.locator("#csv-status").inner_text()
    assert status.startswith("3 rows predicted") and status.endswith("; 1 with errors."), status
