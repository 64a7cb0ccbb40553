"""A model with nullable features on its page, in a real headless Chromium against live Gunicorn:
a person can leave a value out, and sees when a value lies outside the training data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.app import create_app
from service.config import Settings
from tests.browsers import TIMEOUT_MS, chromium
from tests.datasets import PENGUIN_FEATURES, add_penguins
from tests.servers import Server, http, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def penguins_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    root = tmp_path_factory.mktemp("penguins_store")
    pipeline = add_penguins(create_app(Settings(model_store=root)), tmp_path_factory.mktemp("penguins_files"))
    with running_server(root, tmp_path_factory.mktemp("penguins_server"), SERVICE_WORKERS="1") as server:
        yield server, pipeline


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile-missing"), viewport={"width": 1280, "height": 900}
    ) as context:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        page.close()


def wait_for_answer(page: Any, label: str) -> None:
    page.wait_for_function(
        """label => {
             const result = document.getElementById('result');
             return !result.classList.contains('is-pending') && !result.classList.contains('is-stale')
                 && document.getElementById('result-label').textContent.trim() === label;
           }""",
        arg=label,
        timeout=TIMEOUT_MS,
    )


def test_missing_values_are_sent_as_null_and_warnings_shown_by_their_field(
    page: Any, penguins_server: tuple[Server, Any]
) -> None:
    server, pipeline = penguins_server
    manifest = http("GET", server.url("/v1/models/penguins")).json()
    row: dict[str, Any] = {feature["name"]: feature["typical"] for feature in manifest["features"]}
    page.goto(server.url("/models/penguins"))
    page.wait_for_function("() => document.getElementById('result-meta').textContent.includes('version')")

    # Gentoo-sized measurements, with sex and the bill length left out.
    row.update(bill_depth_mm=15.0, flipper_length_mm=220.0, body_mass_g=5500.0, island="Biscoe")
    page.select_option('select[name="island"]', "Biscoe")
    for name in ("bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        page.locator(f'input[type=number][name="{name}"]').fill(str(row[name]))
    page.select_option('select[name="sex"]', "")
    page.locator('input[type=number][name="bill_length_mm"]').fill("")
    row.update(sex=np.nan, bill_length_mm=np.nan)
    expected = pipeline.predict(pd.DataFrame([row], dtype=object)[PENGUIN_FEATURES])[0]
    wait_for_answer(page, expected)
    assert page.locator(".field-error:visible").count() == 0

    # A flipper far longer than any in the data: still predicted, and the field says so.
    page.locator('input[type=number][name="flipper_length_mm"]').fill("400")
    warning = page.locator('.field[data-name="flipper_length_mm"] .field-warning')
    warning.wait_for(state="visible")
    assert "outside the training data's range" in warning.inner_text()
    assert page.locator('.field[data-name="body_mass_g"] .field-warning').is_hidden()
