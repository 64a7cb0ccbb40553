"""Baseline (a), "the limit": a bare WSGI callable that predicts and nothing else.

No framework, no validation, no metrics, no logging: parse, one ``predict_proba``,
render the same answer document the service gives. Whatever the service spends
beyond this is the price of its framework and its checks.

    gunicorn --worker-class gthread --preload bench.bare_app:app
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from bench.store import MODELS, StoredModel, load, probability_keys

# The same guard as the service's: scikit-learn edits the process-wide warnings
# filters while it predicts, which two threads must not do at once. Prediction
# holds the GIL for most of its time anyway, so the lock costs next to nothing.
_LOCK = threading.Lock()

_NOT_FOUND = b'{"error":"not found"}'
_BAD_BODY = b'{"error":"bad body"}'


class _Route:
    __slots__ = ("classes", "keys", "many", "model", "version")

    def __init__(self, stored: StoredModel, *, many: bool) -> None:
        self.model = stored.estimator
        self.version = stored.version
        self.classes = stored.estimator.classes_
        self.keys = probability_keys(stored.estimator.classes_)
        self.many = many


def _routes() -> dict[str, tuple[str, _Route]]:
    routes = {}
    for name in MODELS:
        stored = load(name)
        routes[f"/v1/models/{name}/predict"] = (name, _Route(stored, many=False))
        routes[f"/v1/models/{name}/predict/batch"] = (name, _Route(stored, many=True))
    return routes


ROUTES = _routes()


def _answer(name: str, route: _Route, body: bytes) -> bytes:
    document = orjson.loads(body)
    if route.many:
        matrix = np.asarray(document["instances"], dtype=np.float64)
        matrix = matrix.reshape(len(matrix), -1)
    else:
        matrix = np.asarray(document["features"], dtype=np.float64).reshape(1, -1)
    with _LOCK:
        probabilities = route.model.predict_proba(matrix)
    labels = route.classes[probabilities.argmax(axis=1)].tolist()
    keys = route.keys
    rows = [dict(zip(keys, row, strict=True)) for row in probabilities.tolist()]
    if route.many:
        answer = {"model": name, "model_version": route.version, "predictions": labels, "probabilities": rows}
    else:
        answer = {
            "model": name,
            "model_version": route.version,
            "prediction": labels[0],
            "probabilities": rows[0],
        }
    return orjson.dumps(answer)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    found = ROUTES.get(environ.get("PATH_INFO", "")) if environ["REQUEST_METHOD"] == "POST" else None
    if found is None:
        status, body = "404 Not Found", _NOT_FOUND
    else:
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        raw = stream.read(int(length)) if length else stream.read()
        try:
            status, body = "200 OK", _answer(*found, raw)
        except (ValueError, TypeError, KeyError):
            status, body = "400 Bad Request", _BAD_BODY
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
