"""Typed errors raised where things go wrong.

These carry meaning, not HTTP: the model layer, the CLI and every front end raise
them, and ``service.api.problems`` is the one place that turns them into
problem-details responses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """Base class; ``detail`` is a sentence safe to show to a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- Serving -----------------------------------------------------------------


class ModelNotFound(ServiceError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No model named {name!r} is served.")
        self.name = name


class ModelNotReady(ServiceError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Model {name!r} is not ready: {reason}")
        self.name = name
        self.reason = reason


class InvalidInput(ServiceError):
    """The request is well-formed JSON but its values do not fit the model.

    ``errors`` names each bad field (keyed by row index first for batches).
    """

    def __init__(self, detail: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.errors = dict(errors or {})


class TooManyRows(ServiceError):
    def __init__(self, rows: int, limit: int) -> None:
        super().__init__(f"The request has {rows} rows; at most {limit} are accepted per request.")
        self.rows = rows
        self.limit = limit


class PredictionFailed(ServiceError):
    """The model raised on input that passed validation: a fault of the model, not the client."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"Model {name!r} version {version} failed to predict.")
        self.name = name
        self.version = version


# --- Loading -----------------------------------------------------------------


class ModelLoadError(ServiceError):
    """A stored model cannot be served; the message names the model and the cause."""

    def __init__(self, name: str, version: str | None, reason: str) -> None:
        where = f"{name!r}" if version is None else f"{name!r} version {version}"
        super().__init__(f"Model {where}: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class ManifestError(ModelLoadError):
    """The manifest is missing, not JSON, or does not describe the artifact."""


class ArtifactMissing(ModelLoadError):
    pass


class ArtifactHashMismatch(ModelLoadError):
    """The artifact's SHA-256 differs from its manifest: it is never unpickled."""


class IncompatibleVersion(ModelLoadError):
    """Trained with other library versions while strict version checking is on."""


# --- Requests ----------------------------------------------------------------


class MalformedRequest(ServiceError):
    """The body is not JSON at all (syntax, encoding, duplicate keys)."""


class UnsupportedMediaType(ServiceError):
    pass
