"""Answers sent while they are made: the request stays open (its context, its metrics) until the last byte.

Flask runs ``after_request`` before a streamed body is sent, and, with
``stream_with_context``, runs ``teardown_request`` twice: once when the view
returns, and once when the stream ends. A view that streams wraps its body with
``streamed``: the request's context is kept for the body (its log lines carry
the request id and model), and ``g`` says whether the stream has ended, so the
request metrics (``service.api.metrics``) are recorded once, at its end, with
the whole time the answer took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask import g, stream_with_context

STREAMING = "streaming"  # g: the answer is a stream
STREAM_ENDED = "stream_ended"  # g: ... which has ended (the second teardown is the last)


def streamed(chunks: Iterator[bytes], on_end: Callable[[], None]) -> Iterator[bytes]:
    """The body for a streamed response: ``chunks``, then ``on_end()`` however the stream ends
    (its last byte sent, a fault, or the client gone)."""
    setattr(g, STREAMING, True)

    def body() -> Iterator[bytes]:
        try:
            yield from chunks
        finally:
            try:
                on_end()
            finally:
                setattr(g, STREAM_ENDED, True)

    return stream_with_context(body())


def stream_pending() -> bool:
    """True while a streamed answer has not ended (its request is not over yet)."""
    return bool(g.get(STREAMING)) and not g.get(STREAM_ENDED)
