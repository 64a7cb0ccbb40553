"""A request id for every request: the client's own if well-formed, else a new one.

It is echoed in ``X-Request-ID`` and quoted in 5xx problems so a client's report
can be matched with the server's log.
"""

from __future__ import annotations

import random
import re

from flask import Flask, g, request
from flask.wrappers import Response

HEADER = "X-Request-ID"
_ENVIRON_KEY = "HTTP_" + HEADER.upper().replace("-", "_")  # where WSGI puts the header
# Anything else (long, or with characters that could forge log lines) is replaced.
# Matched with fullmatch: a ``$`` at the end would also match before a final newline.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def chosen(sent: str) -> str:
    """The id a request goes by: the one it sent, if well-formed, else a new one (gRPC's too)."""
    return sent if sent and _WELL_FORMED.fullmatch(sent) else new_id()


def new_id() -> str:
    """A random version 4 UUID, as 32 hex digits.

    Its bits come from ``random`` (seeded from the system's randomness, and
    again in each forked worker), not from ``uuid.uuid4``'s system call: that
    call lets go of the GIL, which under load hands it to another thread and
    back at every request. An id is no secret (a client may choose its own);
    it need only be unique.
    """
    return f"{random.getrandbits(128) & _KEPT | _VERSION_4:032x}"


# The bits uuid.UUID(int=..., version=4) sets: the variant (RFC 4122) and the version (4).
_KEPT = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_4 = (0x8000 << 48) | (4 << 76)


def _assign() -> None:
    g.request_id = chosen(request.environ.get(_ENVIRON_KEY, ""))


def _echo(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id", "")
    return response


def init_app(app: Flask) -> None:
    app.before_request(_assign)
    app.after_request(_echo)
