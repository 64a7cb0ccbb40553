"""The access log: one JSON line per request, written by the app once its answer has been sent.

Gunicorn can write an access log, but builds a dictionary of every request
header and environment variable for each request before a formatter picks the
few fields it needs: a fifth of a small request's cost. This middleware writes
the same record (the fields of the other log lines, plus the request's) with
one ``orjson.dumps`` and one ``write``; Gunicorn's own access log is off.

Fields: ``request_id``, ``method``, ``path`` (without its query string, which
may carry secrets), ``route`` (the URL rule), ``status``, ``duration`` (seconds,
from the app's first call to the end of the answer, a streamed one included),
``model``, ``version``, ``remote_addr``. The app names the route, model and
version in the WSGI environ (``service.route``, ``service.model``,
``service.model_version``); the request id is its ``X-Request-ID`` header.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from werkzeug.wsgi import ClosingIterator

LOGGER = "service.access"
_REQUEST_ID = "x-request-id"


def write_stdout(line: bytes) -> None:
    # One write per record: lines from the worker's threads never interleave
    # (the app's other log lines are written whole too, one flush each).
    os.write(1, line)


class AccessLog:
    """WSGI middleware: the access record of every request, written when the answer is closed."""

    def __init__(self, app: Callable[..., Iterable[bytes]], write: Callable[[bytes], None] = write_stdout):
        self.app = app
        self.write = write

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        answered: list[Any] = []

        def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered[:] = (status, headers)
            return start_response(status, headers, exc_info)

        def log() -> None:
            self.write(_record(environ, answered, time.perf_counter() - started))

        return ClosingIterator(self.app(environ, remember), log)


def _record(environ: dict[str, Any], answered: list[Any], duration: float) -> bytes:
    status, headers = answered if answered else ("", ())
    code = status[:3]
    request_id = next((value for name, value in headers if name.lower() == _REQUEST_ID), None)
    return record_line(
        request_id=request_id,
        method=environ.get("REQUEST_METHOD"),
        path=environ.get("PATH_INFO"),
        route=environ.get("service.route"),
        status=int(code) if code.isdigit() else None,
        duration=duration,
        model=environ.get("service.model"),
        version=environ.get("service.model_version"),
        remote_addr=environ.get("REMOTE_ADDR"),
        # The API client's name (never its key), when keys are on (service.api.auth).
        client=environ.get("service.client"),
    )


def record_line(
    *,
    request_id: str | None,
    method: str | None,
    path: str | None,
    route: str | None,
    status: int | str | None,
    duration: float,
    model: str | None,
    version: str | None,
    remote_addr: str | None,
    client: str | None,
) -> bytes:
    """One access record, a JSON line. A gRPC call's (``service.v2.grpc_service``) has the
    name of its status code for ``status``."""
    return orjson.dumps(
        {
            "level": "INFO",
            "logger": LOGGER,
            "message": f"{method} {path} {'' if status is None else status}",
            # Read at each record: a worker is a fork of the process that built the app.
            "pid": os.getpid(),
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration": round(duration, 6),
            "model": model,
            "version": version,
            "remote_addr": remote_addr,
            "client": client,
            # orjson writes it as isoformat() does, in C.
            "timestamp": datetime.now(UTC),
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
