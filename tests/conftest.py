"""Fixtures: a demo model store trained once per session, and apps built from the factory."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.app import create_app
from service.config import Settings
from service.models import ModelStore
from service.models.demo import DEMOS, train


@pytest.fixture(scope="session")
def demo_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three demo models, trained once and never modified by tests."""
    root = tmp_path_factory.mktemp("demo_store")
    store = ModelStore(root)
    for demo in DEMOS:
        train(demo, store)
    return root


@pytest.fixture
def store_path(demo_store_path: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store that a test may change."""
    root = tmp_path / "store"
    shutil.copytree(demo_store_path, root)
    return root


@pytest.fixture
def make_app() -> Callable[..., Flask]:
    """Build an app from the factory with explicit settings (no environment)."""

    def build(**settings: Any) -> Flask:
        app = create_app(Settings(**settings))
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, demo_store_path: Path) -> Flask:
    """An app serving the demo models, shared by the read-only tests of a module."""
    built = create_app(Settings(model_store=demo_store_path))
    built.config["TESTING"] = True
    return built


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
