"""Rate limits, with Flask-Limiter: one noisy client must not take the service over.

Counted per API client when keys are on (its name), else per client address,
in two route groups, each with its own setting and each shared by all its routes
(a client cannot double its budget by switching routes):

- ``predictions``: every prediction route, JSON and CSV (``SERVICE_RATE_LIMIT``);
- ``reads``: model metadata and listings, the docs and the pages (``SERVICE_RATE_LIMIT_READ``).

The probes and ``/metrics`` are never limited. ``SERVICE_RATE_LIMIT_ROWS`` adds a
budget of rows on the JSON prediction routes: a request is let in while the
budget lasts, and charged its rows once answered, so that a 1,000-row batch
costs a thousand single rows. (A CSV upload is governed by the request limit and
its size limit: its rows are known only as it streams.)

Counts live in memory by default, so each worker counts alone, or in Redis
(``SERVICE_RATE_LIMIT_STORAGE=redis://...``), shared by every worker of every
replica. If the storage cannot be reached, requests are let through (fail
open): the service keeps serving, each failure is counted in
``rate_limit_storage_errors_total`` and logged, at most once in ten seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from service.config import REDIS_SCHEMES, Settings

PREDICTION_BLUEPRINTS = ("predict", "csv_predict", "v2_infer")
ROWS_BLUEPRINTS = ("predict", "v2_infer")  # the JSON routes, which know their rows before they answer
READ_BLUEPRINTS = ("models", "v2", "docs", "pages")
# A dead storage answers every request with an error: one log line per this many seconds.
LOG_EVERY_SECONDS = 10.0


def client_key() -> str:
    """Whom a request is counted for: its API client, else its address."""
    client = g.get("client")
    return f"client:{client.name}" if client is not None else f"address:{get_remote_address()}"


def _rows_charged() -> int:
    # Asked twice: when the request comes (rows unknown: 1, is any budget left?) and once
    # it is answered (its rows, set by the prediction views).
    return max(1, int(g.get("rows_predicted", 1)))


def _charge_when_answered(response: Any) -> bool:
    return request.method == "POST"


class _StorageErrors(logging.Filter):
    """Counts the errors Flask-Limiter logs and lets through, and thins their log lines.

    One per process, on Flask-Limiter's logger; it counts for the app built last
    (a server process builds one).
    """

    def __init__(self) -> None:
        super().__init__()
        self.count: Callable[[], None] = lambda: None
        self._last_logged = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.count()
        now = time.monotonic()
        if now - self._last_logged < LOG_EVERY_SECONDS:
            return False
        self._last_logged = now
        record.msg = (
            "rate limit storage unreachable, requests let through "
            f"(logged once in {LOG_EVERY_SECONDS:g} s): {record.msg}"
        )
        return True


_STORAGE_ERRORS = _StorageErrors()
EXTENSION_KEY = "service.rate_limited"


def init_app(app: Flask, settings: Settings, on_storage_error: Callable[[], None]) -> Limiter | None:
    """Limit the route groups that have a limit set; None when none has.

    Call after the API key check is registered: the limit is counted for the client it found.
    """
    if not (settings.rate_limit or settings.rate_limit_read or settings.rate_limit_rows):
        return None
    storage_options: dict[str, Any] = {}
    if settings.rate_limit_storage.startswith(REDIS_SCHEMES):
        # A Redis that does not answer must not hold requests: give up quickly, fail open.
        storage_options = {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
    limiter = Limiter(
        client_key,
        app=app,
        storage_uri=settings.rate_limit_storage,
        storage_options=storage_options,
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        key_prefix="sklearn-service",
    )
    # A browser's CORS preflight carries no key and answers no data: it spends no budget.
    limiter.request_filter(lambda: request.method == "OPTIONS")
    _STORAGE_ERRORS.count = on_storage_error
    logging.getLogger("flask-limiter").addFilter(_STORAGE_ERRORS)  # once: a filter is added once
    blueprints = app.blueprints
    if settings.rate_limit:
        shared = limiter.shared_limit(settings.rate_limit, scope="predictions")
        for name in PREDICTION_BLUEPRINTS:
            if name in blueprints:
                shared(blueprints[name])
    if settings.rate_limit_rows:
        rows = limiter.shared_limit(
            settings.rate_limit_rows,
            scope="prediction-rows",
            cost=_rows_charged,
            deduct_when=_charge_when_answered,
            override_defaults=False,
        )
        for name in ROWS_BLUEPRINTS:
            if name in blueprints:
                rows(blueprints[name])
    if settings.rate_limit_read:
        shared = limiter.shared_limit(settings.rate_limit_read, scope="reads")
        for name in READ_BLUEPRINTS:
            if name in blueprints:
                shared(blueprints[name])
    # For the OpenAPI document: the blueprints whose routes may answer 429.
    app.extensions[EXTENSION_KEY] = frozenset(
        (PREDICTION_BLUEPRINTS if settings.rate_limit else ())
        + (ROWS_BLUEPRINTS if settings.rate_limit_rows else ())
        + (READ_BLUEPRINTS if settings.rate_limit_read else ())
    )
    return limiter


def rate_limited(app: Flask, blueprint: str | None) -> bool:
    """True when the blueprint's routes have a rate limit."""
    return (blueprint or "") in app.extensions.get(EXTENSION_KEY, frozenset())
