"""Structured logs: one JSON object per line on stdout, for the app and for Gunicorn.

``logging_config`` is what ``gunicorn.conf.py`` hands to Gunicorn as
``logconfig_dict``; the JSON itself is written by python-json-logger. Two
filters add the fields an operator searches by: the request id, method, route,
status and duration, the model and version, and the worker's pid. Request and
response bodies and headers are never logged (they may carry secrets); the
access log records the path without its query string for the same reason.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import g, has_request_context, request


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


class AccessFields(logging.Filter):
    """Turns Gunicorn's access-log atoms into fields of the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args if isinstance(record.args, dict) else None
        if atoms is None:
            return True
        record.request_id = atoms.get("{x-request-id}o")
        record.method = atoms.get("m")
        record.path = atoms.get("U")
        record.route = atoms.get("{service.route}e")
        record.status = int(atoms["s"]) if str(atoms.get("s", "")).isdigit() else atoms.get("s")
        record.duration = float(atoms["L"]) if "L" in atoms else None
        record.model = atoms.get("{service.model}e")
        record.version = atoms.get("{service.model_version}e")
        record.remote_addr = atoms.get("h")
        return True


# Gunicorn's access-log message; the fields above carry the details.
ACCESS_LOG_FORMAT = "%(m)s %(U)s %(s)s"


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
            "access_fields": {"()": "service.logs.AccessFields"},
        },
        "handlers": {
            "app": {**stdout, "filters": ["request_context"]},
            "access": {**stdout, "filters": ["access_fields"]},
        },
        "root": {"level": level, "handlers": ["app"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["app"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }
