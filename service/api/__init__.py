"""The HTTP front end: thin views over the model layer, one blueprint per concern."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from service.config import Settings
from service.models import ModelRegistry, ModelStore


@dataclass(frozen=True)
class ServiceState:
    """What the app was given at creation; views reach it through ``state()``."""

    settings: Settings
    store: ModelStore
    registry: ModelRegistry


EXTENSION_KEY = "service"


def state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
