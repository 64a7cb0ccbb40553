"""Reading a JSON request body strictly, before any schema sees it."""

from __future__ import annotations

import json
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import MalformedRequest, UnsupportedMediaType


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys: an ambiguous
    # body is refused rather than half-read.
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise MalformedRequest(f"The JSON object repeats the key {repeated!r}.")
    return document


def _special_number(token: str) -> float:
    # NaN and Infinity are not JSON, but Python's parser takes them. They are
    # kept as floats here so that validation names the field that holds one.
    return float(token)


def read_json(request: Request) -> Any:
    """The decoded body; raises ``UnsupportedMediaType`` or ``MalformedRequest``.

    A body over the app's ``MAX_CONTENT_LENGTH`` raises ``RequestEntityTooLarge``
    (413) before more than the limit is buffered.
    """
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed."
        )
    if not request.is_json:
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(f"Expected Content-Type: application/json, got {sent}.")
    data = request.get_data(cache=False)
    limit = request.max_content_length
    # Werkzeug cuts a chunked body at the limit without an error; one more byte
    # from the server's stream tells a complete body from a cut one.
    chunked = request.content_length is None
    if chunked and limit is not None and len(data) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    if not data.strip():
        raise MalformedRequest("The request body is empty; send a JSON document.")
    try:
        return json.loads(data, object_pairs_hook=_reject_duplicates, parse_constant=_special_number)
    except UnicodeDecodeError:
        raise MalformedRequest("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as error:
        raise MalformedRequest(
            f"The request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except RecursionError:
        raise MalformedRequest("The JSON document is nested too deeply.") from None
    except ValueError as error:  # e.g. an integer literal longer than Python converts
        raise MalformedRequest(f"The request body cannot be read as JSON: {error}.") from None
