"""Headless Chromium for the browser tests: Debian's, driven by playwright, with a fresh profile."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What headless Chromium needs here: no sandbox as root, no GPU, and no calls home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000


@contextlib.contextmanager
def chromium(profile: Path, **options: Any) -> Iterator[Any]:
    """A browser context on a new profile folder; playwright downloads no browser."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `make browser-deps` (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, **options
        )
        try:
            yield context
        finally:
            context.close()
