"""The API docs in a real headless Chromium (Debian's, installed by `make browser-deps`).

The browser talks to the live Gunicorn server. Every request the pages make must
stay on that server, and none may even be tried elsewhere (and then blocked by
the pages' Content-Security-Policy): the docs work on a network without
internet, under a policy that nothing on them breaks. Set SCREENSHOTS_DIR to keep
the screenshots (`make screenshots` writes docs/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.browsers import TIMEOUT_MS, chromium
from tests.servers import Server, http, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def docs_server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        demo_store_path, tmp_path_factory.mktemp("docs_server"), SERVICE_WORKERS="1"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1280, "height": 900}
    ) as context:
        yield context


@pytest.fixture
def page(browser: object, docs_server: Server) -> Iterator[object]:
    """A page that records every host it sends a request to, and what its policy refused."""
    page = browser.new_page()  # type: ignore[attr-defined]
    sent: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    # The page's Content-Security-Policy stops a request before it leaves the
    # browser, and refuses scripts, styles and workers with a console message.
    page.on("requestfailed", lambda request: request.failure == "csp" and refused.append(request.url))
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and refused.append(message.text),
    )
    yield page
    page.close()
    hosts = {urlsplit(url).netloc for url in sent if url.startswith("http")}
    assert hosts <= {f"127.0.0.1:{docs_server.port}"}, hosts
    assert not refused, refused


def screenshot(page: object, name: str, tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.screenshot(path=str(path), full_page=False)  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def test_swagger_ui_lists_every_route(page: object, docs_server: Server, tmp_path: Path) -> None:
    document = http("GET", docs_server.url("/openapi.json")).json()
    page.goto(docs_server.url("/docs"))  # type: ignore[attr-defined]
    page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)  # type: ignore[attr-defined]
    shown = page.eval_on_selector_all(  # type: ignore[attr-defined]
        ".opblock",
        """blocks => blocks.map(b => b.querySelector('.opblock-summary-method').textContent.trim()
                     + ' ' + b.querySelector('.opblock-summary-path').getAttribute('data-path'))""",
    )
    documented = [f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item]
    assert sorted(shown) == sorted(documented)
    assert page.locator("h2.title").inner_text().startswith("scikit-learn model service")  # type: ignore[attr-defined]
    screenshot(page, "swagger-ui.png", tmp_path)


def test_try_it_out_on_predict_returns_a_prediction(
    page: object, docs_server: Server, tmp_path: Path
) -> None:
    # No deep link: Swagger UI would open the operation itself a moment after it appears,
    # and a click meant to open it could land first and close it again.
    page.goto(docs_server.url("/docs"))  # type: ignore[attr-defined]
    operation = page.locator("#operations-iris-predict_predict_default_iris")  # type: ignore[attr-defined]
    operation.wait_for(timeout=TIMEOUT_MS)
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.wait_for(timeout=TIMEOUT_MS)
    assert status.inner_text().strip() == "200"
    body = operation.locator(
        ".live-responses-table .response-col_description pre.microlight"
    ).first.inner_text()
    assert '"model": "iris"' in body.replace("\n", " ") or '"model":"iris"' in body
    assert '"prediction"' in body and '"probabilities"' in body
    operation.locator(".live-responses-table").scroll_into_view_if_needed()
    screenshot(page, "swagger-try-it-out.png", tmp_path)


def test_redoc_renders_the_reference(page: object, docs_server: Server, tmp_path: Path) -> None:
    page.goto(docs_server.url("/redoc"))  # type: ignore[attr-defined]
    heading = page.locator("h2", has_text="Predict with the default model: iris").first  # type: ignore[attr-defined]
    heading.wait_for(timeout=TIMEOUT_MS)
    assert page.locator("h1", has_text="scikit-learn model service").first.is_visible()  # type: ignore[attr-defined]
    screenshot(page, "redoc.png", tmp_path)


def test_redoc_shows_no_broken_image(page: object, docs_server: Server) -> None:
    """ReDoc's logo (from a CDN, as shipped) comes from the service, and loads."""
    page.goto(docs_server.url("/redoc"))  # type: ignore[attr-defined]
    heading = page.locator("h2", has_text="Predict with the default model: iris").first  # type: ignore[attr-defined]
    heading.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
    images = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "img", "images => images.map(i => ({src: i.src, loaded: i.complete && i.naturalWidth > 0}))"
    )
    assert images, "ReDoc shows its logo in the side menu"
    for image in images:
        assert image["loaded"] and image["src"].startswith(docs_server.url("/")), image
