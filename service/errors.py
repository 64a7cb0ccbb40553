"""Typed errors raised where things go wrong.

These carry meaning, not HTTP: the model layer, the CLI and every front end raise
them, and ``service.api.problems`` is the one place that turns them into
problem-details responses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ServiceError(Exception):
    """Base class; ``detail`` is a sentence safe to show to a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- Serving -----------------------------------------------------------------


class ModelNotFound(ServiceError):
    def __init__(self, name: str, version: str | None = None, served: str | None = None) -> None:
        if version is None:
            super().__init__(f"No model named {name!r} is served.")
        else:
            super().__init__(f"Model {name!r} version {version} is not served (version {served} is).")
        self.name = name
        self.version = version


class ModelNotReady(ServiceError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Model {name!r} is not ready: {reason}")
        self.name = name
        self.reason = reason


# The key under which a fault of a whole row (not of one field) is reported.
ROW_ERROR_KEY = "_row"

# An error answer names at most this many bad fields (counted over all rows),
# then how many more there are: a request of a few MiB can hold hundreds of
# thousands of bad fields, and an answer listing them all would be larger than
# the request and take longer to write than to refuse.
MAX_LISTED_ERRORS = 100


class InvalidInput(ServiceError):
    """The request is well-formed but its values do not fit the model.

    ``errors`` names each bad field (keyed by row index first for batches), at
    most ``MAX_LISTED_ERRORS`` of them in order; ``omitted`` counts the bad
    fields found beyond those, including ``omitted`` more that the caller found
    but did not keep (a file read chunk by chunk keeps only the first ones).
    """

    def __init__(self, detail: str, errors: Mapping[str, Any] | None = None, *, omitted: int = 0) -> None:
        self.errors, self.omitted = first_errors(errors or {})
        self.omitted += omitted
        listed = count_fields(self.errors)
        if self.omitted:
            detail += f" The first {listed} bad fields are listed in 'errors'; {self.omitted} more are not."
        super().__init__(detail)


class UnreadableFile(InvalidInput):
    """An uploaded file cannot be read on from ``line`` (a line too long, broken quoting)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(
            f"The file cannot be read from line {line} on: {message}",
            {f"line {line}": {ROW_ERROR_KEY: [message]}},
        )
        self.line = line
        self.message = message


def first_errors(errors: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """(the first ``MAX_LISTED_ERRORS`` fields of ``errors``, how many more there are)."""
    kept, listed, total = _first_errors(errors, MAX_LISTED_ERRORS)
    return kept, total - listed


def count_fields(errors: Mapping[str, Any]) -> int:
    """The fields in ``errors``: keys whose value is a list of messages, however deep."""
    return sum(count_fields(value) if isinstance(value, dict) else 1 for value in errors.values())


def _first_errors(errors: Mapping[str, Any], budget: int) -> tuple[dict[str, Any], int, int]:
    """(the first ``budget`` fields of ``errors``, how many were kept, how many there are).

    A field is a key whose value is a list of messages; a mapping (a row, an
    envelope) holds fields of its own and counts as the fields it holds.
    """
    kept: dict[str, Any] = {}
    listed = total = 0
    for key, value in errors.items():
        if isinstance(value, dict):
            inner, inner_listed, inner_total = _first_errors(value, budget - listed)
            if inner:
                kept[key] = inner
            listed += inner_listed
            total += inner_total
        else:
            total += 1
            if listed < budget:
                kept[key] = value
                listed += 1
    return kept, listed, total


def listing(names: Sequence[str], limit: int = 10) -> str:
    """``a, b, c``; past ``limit`` names, ``a, b, ... and 7 more``: a message stays short."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


class TooManyRows(ServiceError):
    def __init__(self, rows: int, limit: int) -> None:
        super().__init__(f"The request has {rows} rows; at most {limit} are accepted per request.")
        self.rows = rows
        self.limit = limit


class TooManyColumns(ServiceError):
    def __init__(self, columns: int, limit: int) -> None:
        super().__init__(f"The file's header has {columns} columns; at most {limit} are accepted.")
        self.columns = columns
        self.limit = limit


class JsonTooLarge(ServiceError):
    """A JSON body nests deeper, or holds a longer string, than the service accepts."""


class UploadTooLarge(ServiceError):
    """An upload (its Content-Length, or what arrived) is larger than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The upload is larger than the limit of {limit} bytes.")
        self.limit = limit


class NotReady(ServiceError):
    """Not every configured model is ready; ``models`` is each one's status, for the answer."""

    def __init__(self, detail: str, models: Mapping[str, Any]) -> None:
        super().__init__(detail)
        self.models = dict(models)


class PredictionFailed(ServiceError):
    """The model raised on input that passed validation: a fault of the model, not the client."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"Model {name!r} version {version} failed to predict.")
        self.name = name
        self.version = version


class NotAuthenticated(ServiceError):
    """The request carries no API key, or one the service does not know."""


class NotPermitted(ServiceError):
    """The client's API key does not cover the model the request names."""

    def __init__(self, client: str, model: str) -> None:
        super().__init__(f"The API key of client {client!r} does not cover model {model!r}.")
        self.client = client
        self.model = model


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


class UnreadableBody(ServiceError):
    """The request body cannot be read to its end: broken chunked framing, shorter than its
    Content-Length, or the connection closed early. The client's fault, never the server's."""


class UnsupportedMediaType(ServiceError):
    pass


class InvalidTensor(ServiceError):
    """An Open Inference Protocol request whose tensors cannot be rows: a wrong shape, datatype,
    element count or name, an unknown output. The values' faults are ``InvalidInput``'s."""
