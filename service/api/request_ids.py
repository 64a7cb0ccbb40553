"""A request id for every request: the client's own if well-formed, else a new one.

It is echoed in ``X-Request-ID`` and quoted in 5xx problems so a client's report
can be matched with the server's log.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request
from flask.wrappers import Response

HEADER = "X-Request-ID"
# Anything else (long, or with characters that could forge log lines) is replaced.
# Matched with fullmatch: a ``$`` at the end would also match before a final newline.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def chosen(sent: str) -> str:
    """The id a request goes by: the one it sent, if well-formed, else a new one (gRPC's too)."""
    return sent if _WELL_FORMED.fullmatch(sent) else uuid.uuid4().hex


def _assign() -> None:
    g.request_id = chosen(request.headers.get(HEADER, ""))


def _echo(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id", "")
    return response


def init_app(app: Flask) -> None:
    app.before_request(_assign)
    app.after_request(_echo)
