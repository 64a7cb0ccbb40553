"""Baseline "bare arrays", the limit: a bare WSGI callable that predicts and nothing else.

No framework, no validation, no metrics, no logging: ``orjson.loads``, one
``predict_proba``, the labels taken from it, and ``orjson.dumps`` of
``{"predictions": labels, "probabilities": matrix}`` as arrays (one row's body,
``{"features": row}``, is answered as a batch of one). Whatever the service spends
beyond this is the price of its framework, its checks and its answer document.

    gunicorn --worker-class gthread --preload bench.bare_app:app
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from bench.store import MODELS, load

# The same guard as the service's: scikit-learn edits the process-wide warnings
# filters while it predicts, which two threads must not do at once. Prediction
# holds the GIL for most of its time anyway, so the lock costs next to nothing.
_LOCK = threading.Lock()

_NOT_FOUND = b'{"error":"not found"}'
_BAD_BODY = b'{"error":"bad body"}'


def _routes() -> dict[str, Any]:
    routes = {}
    for name in MODELS:
        estimator = load(name).estimator
        routes[f"/v1/models/{name}/predict"] = estimator
        routes[f"/v1/models/{name}/predict/batch"] = estimator
    return routes


ROUTES = _routes()


def _answer(model: Any, body: bytes) -> bytes:
    document = orjson.loads(body)
    rows = document["instances"] if "instances" in document else [document["features"]]
    matrix = np.asarray(rows, dtype=np.float64)
    with _LOCK:
        probabilities = model.predict_proba(matrix)
    labels = model.classes_[probabilities.argmax(axis=1)].tolist()
    return orjson.dumps(
        {"predictions": labels, "probabilities": probabilities}, option=orjson.OPT_SERIALIZE_NUMPY
    )


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    model = ROUTES.get(environ.get("PATH_INFO", "")) if environ["REQUEST_METHOD"] == "POST" else None
    if model is None:
        status, body = "404 Not Found", _NOT_FOUND
    else:
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        raw = stream.read(int(length)) if length else stream.read()
        try:
            status, body = "200 OK", _answer(model, raw)
        except (ValueError, TypeError, KeyError):
            status, body = "400 Bad Request", _BAD_BODY
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
