"""What the app was given at creation, and how views and CLI commands reach it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.audit import PredictionAuditLog
from service.config import Settings
from service.models import ModelRegistry, ModelStore
from service.models.core import PredictionCore

EXTENSION_KEY = "service"


@dataclass(frozen=True)
class ServiceState:
    """The app's settings, model store, served models, prediction core and audit log;
    views reach it through ``state()``."""

    settings: Settings
    store: ModelStore
    registry: ModelRegistry
    core: PredictionCore
    audit: PredictionAuditLog | None = None


def state() -> ServiceState:
    """The current app's state (inside a request or an app context, e.g. a CLI command)."""
    return current_app.extensions[EXTENSION_KEY]
