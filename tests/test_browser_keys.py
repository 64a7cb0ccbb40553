"""A model's page in headless Chromium when the service asks for API keys.

The page opens without a key (a browser sends none on a link); a prediction
without one shows the service's 401 in words, and typing the key predicts at
once, the key going in the X-API-Key header only, never into the page's text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browsers import TIMEOUT_MS, chromium
from tests.servers import FLASK, Server, run_in_repo, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keyed_pages(
    demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    folder = tmp_path_factory.mktemp("keyed_pages")
    keys_file = folder / "keys"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "FLASK_"))}
    env.update(SERVICE_MODEL_STORE=str(demo_store_path), SERVICE_API_KEYS_FILE=str(keys_file))
    made = run_in_repo([str(FLASK), "--app", "wsgi", "keys", "create", "browser"], env)
    assert made.returncode == 0, made.stderr
    with running_server(
        demo_store_path, folder, SERVICE_WORKERS="1", SERVICE_API_KEYS_FILE=str(keys_file)
    ) as server:
        yield server, made.stdout.strip()


def test_the_page_predicts_once_the_key_is_typed(keyed_pages: tuple[Server, str], tmp_path: Path) -> None:
    server, key = keyed_pages
    with chromium(tmp_path / "profile") as context:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        sent: list[Any] = []
        page.on("request", lambda request: sent.append(request))
        page.goto(server.url("/models/iris"))

        # Without a key: the service's own words, not a silent failure.
        page.locator("#form-error").filter(has_text="needs an API key").wait_for()

        page.locator("#api-key").fill(key)
        page.wait_for_function("() => document.getElementById('result-meta').textContent.includes('version')")
        label = page.locator("#result-label").inner_text().strip()
        assert label in {"setosa", "versicolor", "virginica"}
        assert page.locator("#form-error").is_hidden()

        predictions = [
            r for r in sent if r.method == "POST" and r.url == server.url("/v1/models/iris/predict")
        ]
        assert predictions[0].headers.get("x-api-key") is None
        assert predictions[-1].headers.get("x-api-key") == key
        curl = page.locator("#curl").text_content()
        assert '-H "X-API-Key: $API_KEY"' in curl and key not in curl
        assert key not in page.content()
        assert {urlsplit(r.url).netloc for r in sent if r.url.startswith("http")} == {
            f"127.0.0.1:{server.port}"
        }
