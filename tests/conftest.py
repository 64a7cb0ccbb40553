"""Fixtures: model stores trained once per session, apps built from the factory, the app's JSON logs."""

from __future__ import annotations

import importlib
import io
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.app import create_app
from service.config import Settings
from service.logs import logging_config
from service.models import ModelStore
from service.models.demo import DEMOS, train
from tests.helpers import store_mixed_model


@pytest.fixture(scope="session")
def demo_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three demo models, trained once and never modified by tests."""
    root = tmp_path_factory.mktemp("demo_store")
    store = ModelStore(root)
    for demo in DEMOS:
        train(demo, store)
    return root


@pytest.fixture(scope="session")
def mixed_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model with one feature of every type (float, int, bool, category: see
    ``store_mixed_model``), trained once and never modified by tests."""
    root = tmp_path_factory.mktemp("mixed_store")
    store_mixed_model(root)
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


@pytest.fixture
def fresh_app(make_app: Callable[..., Flask], demo_store_path: Path) -> Flask:
    """An app of this test alone: its metrics start at zero."""
    return make_app(model_store=demo_store_path)


def _from_dict_config(spec: dict[str, Any]) -> Any:
    """An object from a dictConfig ``{"()": "module.Class", **kwargs}`` entry."""
    kwargs = dict(spec)
    module, _, name = kwargs.pop("()").rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@pytest.fixture
def capture_json_logs() -> Iterator[io.StringIO]:
    """The service's app log handler (JSON formatter and request filter, as configured for
    Gunicorn by ``logging_config``) writing to a StringIO, on the root logger for this test only."""
    config = logging_config("INFO")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_from_dict_config(config["formatters"]["json"]))
    for name in config["handlers"]["app"]["filters"]:
        handler.addFilter(_from_dict_config(config["filters"][name]))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
