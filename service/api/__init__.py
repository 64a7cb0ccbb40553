"""The HTTP front end: thin views over the model layer, one blueprint per concern."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from flask.wrappers import Response

from service.audit import PredictionAuditLog
from service.config import Settings
from service.models import ModelRegistry, ModelStore
from service.models.core import PredictionCore


@dataclass(frozen=True)
class ServiceState:
    """What the app was given at creation; views reach it through ``state()``."""

    settings: Settings
    store: ModelStore
    registry: ModelRegistry
    core: PredictionCore
    audit: PredictionAuditLog | None = None


EXTENSION_KEY = "service"


def state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]


class ServiceFlask(Flask):
    """Flask, answering OPTIONS with 204 and no body rather than an empty text/html 200."""

    def make_default_options_response(self) -> Response:
        response = super().make_default_options_response()
        response.status_code = 204
        response.headers["Allow"] = ", ".join(sorted(response.allow))
        del response.headers["Content-Type"]
        return response
