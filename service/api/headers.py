"""What every answer tells a browser and a cache, and which other origins may read the API.

- ``X-Content-Type-Options: nosniff`` on every answer: a browser takes each
  body as its declared type, never guesses HTML in a JSON answer;
- ``Cache-Control: no-store`` on every prediction answer (and its errors): an
  answer about one client's rows is kept by no cache on the way;
- CORS (flask-cors), off unless ``SERVICE_CORS_ORIGINS`` lists origins: a
  browser page from one of them may call the API (preflight answered, the
  key and request-id headers allowed, the rate limit and request-id headers
  readable); a page from any other origin gets no CORS header, so its
  browser keeps the answer from it.

Gunicorn's own answer header ``Server`` names no version.
"""

from __future__ import annotations

from flask import Flask, request
from flask.wrappers import Response
from flask_cors import CORS

from service.api.limits import PREDICTION_BLUEPRINTS

ALLOWED_HEADERS = ("Content-Type", "X-API-Key", "Authorization", "X-Request-ID")
EXPOSED_HEADERS = (
    "X-Request-ID",
    "X-Process-Time",
    "X-Model-Runtime",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


def _protect(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.blueprint in PREDICTION_BLUEPRINTS:
        response.headers["Cache-Control"] = "no-store"
    return response


def _varies_by_origin(response: Response) -> Response:
    # Whether the CORS headers are there depends on the Origin sent: a cache must know.
    response.vary.add("Origin")
    return response


def init_app(app: Flask, cors_origins: tuple[str, ...]) -> None:
    app.after_request(_protect)
    if cors_origins:
        app.after_request(_varies_by_origin)
        CORS(
            app,
            origins=list(cors_origins),
            methods=["GET", "POST"],
            allow_headers=list(ALLOWED_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
