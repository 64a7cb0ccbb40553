"""The request body as the server hands it over, with every reading fault made the client's.

A WSGI server raises its own exceptions when a body cannot be read: Gunicorn
raises ``InvalidChunkSize`` or ``ChunkMissingTerminator`` for broken chunked
framing and ``NoMoreData`` when the client closes early, and a body shorter
than its ``Content-Length`` simply ends. Left alone, the first two reach the
app as unexpected errors (500) and the last is read as if it were the whole
body. ``CheckedInput`` wraps ``wsgi.input`` so that each of these is an
``UnreadableBody`` (400), whatever the route and whoever reads the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import HTTPException

from service.errors import ServiceError, UnreadableBody

log = logging.getLogger(__name__)


class CheckedInput:
    """A file-like ``wsgi.input``: reads through, counts, and turns reading faults into ``UnreadableBody``."""

    def __init__(self, stream: Any, content_length: int | None) -> None:
        self._stream = stream
        self._expected = content_length
        self._received = 0

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._checked(self._stream.readline, size)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _checked(self, read: Callable[[int | None], bytes], size: int | None) -> bytes:
        try:
            data = read(size)
        except (ServiceError, HTTPException):
            raise
        except Exception as error:  # the server's own: broken framing, a reset, a timeout
            log.debug("request body unreadable: %r", error)
            raise UnreadableBody(_reason(error)) from None
        self._received += len(data)
        if not data and size != 0 and self._expected is not None and self._received < self._expected:
            raise UnreadableBody(
                f"The request body ended after {self._received} of the {self._expected} bytes "
                "its Content-Length announced."
            )
        return data


def _reason(error: Exception) -> str:
    # The exception's text may quote the client's bytes: it stays in the debug log.
    if isinstance(error, OSError):  # Gunicorn's NoMoreData, a reset, a timeout
        return "The request body could not be read to its end: the connection failed or closed early."
    return "The request body's framing (its chunked transfer coding) is broken; it cannot be read."


class CheckedBodies:
    """WSGI middleware: every request's ``wsgi.input`` becomes a ``CheckedInput``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = CheckedInput(stream, _content_length(environ))
        return self.app(environ, start_response)


def _content_length(environ: dict[str, Any]) -> int | None:
    if environ.get("HTTP_TRANSFER_ENCODING", "").strip():
        return None  # chunked: the framing says where the body ends
    raw = environ.get("CONTENT_LENGTH", "")
    return int(raw) if raw.isdigit() else None
