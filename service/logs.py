"""Structured logs: one JSON object per line on stdout, for the app and for Gunicorn.

``logging_config`` is what ``gunicorn.conf.py`` hands to Gunicorn as
``logconfig_dict``; the JSON itself is written by python-json-logger. A filter
adds the fields an operator searches by: the request id, method and route, the
model and version; every record has the process's pid. The access log, with the
same fields plus status and duration, is written by ``service.access_log``.
Request and response bodies and headers are never logged (they may carry
secrets); the access log records the path without its query string for the
same reason.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import g, has_request_context, request
from gunicorn import glogging


class RequestContext(logging.Filter):
    """Adds the current request's id, method, route, model and version to app log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
            record.method = request.method
            record.route = request.url_rule.rule if request.url_rule is not None else None
            if "model" in g:
                record.model, record.version = g.model, g.model_version
        return True


class ServerLogger(glogging.Logger):
    """Gunicorn's logger without its access log, which the app writes (``service.access_log``).

    Gunicorn turns its access log on whenever a logging configuration is given,
    and then gathers every header and variable of each request for it.
    """

    access_log_enabled = False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def logging_config(level: str) -> dict[str, Any]:
    json_formatter = {
        "()": "pythonjsonlogger.orjson.OrjsonFormatter",
        "fmt": "%(levelname)s %(name)s %(message)s %(process)d",
        "rename_fields": {"levelname": "level", "name": "logger", "process": "pid"},
        "timestamp": True,
    }
    stdout = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": json_formatter},
        "filters": {
            "request_context": {"()": "service.logs.RequestContext"},
        },
        "handlers": {"app": {**stdout, "filters": ["request_context"]}},
        "root": {"level": level, "handlers": ["app"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["app"], "propagate": False},
        },
    }
