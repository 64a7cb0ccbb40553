"""Reading a JSON request body strictly, before any schema sees it.

orjson reads the body: it takes RFC 8259 JSON only, in UTF-8, several times faster
than the standard library (integer literals beyond 64 bits become the nearest
float, which is what the model computes with anyway). Whatever orjson refuses, and
any body whose keys it may have merged, is read again by the standard library,
which names the fault, refuses repeated keys, and reads NaN and Infinity so that
validation can name the field that holds one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import JsonTooLarge, MalformedRequest, UnsupportedMediaType


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


@dataclass(frozen=True)
class JsonBody:
    """A decoded body, and what its text shows of it.

    ``numbers_only``: every value in it is a number, an array or an object (no
    string but its keys, no true, false or null), so that a row of it needs no
    per-value type check before it becomes a float matrix.
    """

    document: Any
    numbers_only: bool = False


@dataclass(frozen=True)
class JsonLimits:
    """How deep a body may nest (the top value is level 1) and how long its strings may be (bytes)."""

    depth: int = 32
    string_bytes: int = 1024


def read_json(request: Request, limits: JsonLimits | None = None) -> JsonBody:
    """The decoded body; raises ``UnsupportedMediaType``, ``MalformedRequest`` or ``JsonTooLarge``.

    A body over the app's ``MAX_CONTENT_LENGTH`` raises ``RequestEntityTooLarge``
    (413) before more than the limit is buffered; one that nests deeper or holds
    a longer string than ``limits`` allow raises ``JsonTooLarge`` (413) before it is parsed.
    """
    check_encoding(request)
    if not request.is_json:
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(f"Expected Content-Type: application/json, got {sent}.")
    data = body_bytes(request)
    return decode_json(data, limits)


def check_encoding(request: Request) -> None:
    """Refuse a compressed body (``UnsupportedMediaType``): its size would say nothing of its content's."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed."
        )


def body_bytes(request: Request) -> bytes:
    """The whole body; over the app's ``MAX_CONTENT_LENGTH`` raises ``RequestEntityTooLarge``
    before more than the limit is buffered."""
    length, limit = request.content_length, request.max_content_length
    if length is not None and (limit is None or length <= limit):
        # A known length within the limit: read as it is, without Werkzeug's stream
        # wrappers (a body that ends early is an ``UnreadableBody``, see service.api.wsgi_input).
        return _read_exactly(request.environ["wsgi.input"], length)
    data = request.get_data(cache=False)
    # Werkzeug cuts a chunked body at the limit without an error; one more byte
    # from the server's stream tells a complete body from a cut one.
    if length is None and limit is not None and len(data) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def _read_exactly(stream: Any, length: int) -> bytes:
    chunks = []
    while length:
        chunk = stream.read(length)
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_json(data: bytes, limits: JsonLimits | None = None) -> JsonBody:
    """``data`` decoded as JSON, strictly; raises ``MalformedRequest`` or ``JsonTooLarge``."""
    if not data.strip():
        raise MalformedRequest("The request body is empty; send a JSON document.")
    if limits is not None:
        check_shape(data, limits)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # not RFC 8259 JSON: the standard library says why, or reads NaN for validation to name
    else:
        colons = data.count(b":")
        if _no_key_lost(colons, document):
            return JsonBody(document, _numbers_only(data, colons))
    return JsonBody(_strict_loads(data))


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
# Every byte but the quote and the brackets: deleted, they leave the body's skeleton.
_NOT_STRUCTURAL = bytes(code for code in range(256) if code not in b'"[]{}')
_QUOTE, _OPEN, _CLOSE = ord('"'), ord("["), ord("]")


def check_shape(data: bytes, limits: JsonLimits) -> None:
    """Refuse a body that nests deeper, or holds a longer string, than ``limits`` allow.

    Read from the text before any parser recurses into it, in passes of C over
    its bytes: escapes are dropped (an escaped quote ends no string), the
    quotes then pair up into strings, and the brackets outside them give the
    depth. Only a body longer than a limit is checked for it. A body of few
    strings is split at its quotes; one of many is scanned with NumPy a chunk
    at a time, so that the check never needs more than about two copies of the
    body, whatever its shape. What is not valid JSON (an unterminated string)
    is left for the parser to name. About 80 µs for a 1,000-row batch of 22 KB, 1 µs for one row.
    """
    deep = len(data) > limits.depth  # no deeper than its length
    long = len(data) > limits.string_bytes
    if not (deep or long):
        return
    text = _ESCAPE.sub(b"", data) if b"\\" in data else data
    quotes = text.count(b'"')
    if quotes % 2:
        return
    if quotes <= _FEW_STRINGS * 2:
        pieces = text.split(b'"')  # strings at the odd places
        longest = max(map(len, pieces[1::2]), default=0)
        outside = b"".join(pieces[0::2]) if quotes else text
    else:
        longest = _longest_string(text) if long else 0
        outside = None
    if long and longest > limits.string_bytes:
        raise JsonTooLarge(
            f"A string in the body is {longest} bytes long; at most {limits.string_bytes} are accepted."
        )
    if not deep:
        return
    if outside is not None:
        # Opening brackets become +1, closing ones -1, the rest goes: the levels are its running sum.
        steps = outside.translate(_STEPS, _NOT_BRACKETS)
        depth = _running_max(steps) if steps.count(b"\x01") > limits.depth else 0
    else:
        # "{" and "}" become "[" and "]": the skeleton holds only quotes and brackets.
        depth = _deepest(text.translate(_BRACES, _NOT_STRUCTURAL))
    if depth > limits.depth:
        raise JsonTooLarge(f"The body nests {depth} levels deep; at most {limits.depth} are accepted.")


# Up to this many strings, a body is split at its quotes (a list of that many pieces).
_FEW_STRINGS = 4096
_CHUNK = 1 << 16
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _running_max(steps: bytes) -> int:
    """The highest running sum of ``steps`` (bytes read as int8: 1 or -1)."""
    deepest = level = 0
    for start in range(0, len(steps), _CHUNK):
        part = np.frombuffer(steps, dtype=np.int8, count=min(_CHUNK, len(steps) - start), offset=start)
        levels = np.cumsum(part, dtype=np.int64)
        deepest = max(deepest, level + int(levels.max()))
        level += int(levels[-1])
    return deepest


def _longest_string(text: bytes) -> int:
    """The bytes between the quotes of the longest string (escapes dropped before)."""
    longest, opened = 0, None
    for start in range(0, len(text), _CHUNK):
        part = np.frombuffer(text, dtype=np.uint8, count=min(_CHUNK, len(text) - start), offset=start)
        quotes = np.flatnonzero(part == _QUOTE) + start
        if opened is not None:
            quotes = np.concatenate(([opened], quotes))
        opened = int(quotes[-1]) if len(quotes) % 2 else None
        pairs = len(quotes) // 2 * 2
        if pairs:
            longest = max(longest, int((quotes[1:pairs:2] - quotes[0:pairs:2]).max()) - 1)
    return longest


def _deepest(skeleton: bytes) -> int:
    """The deepest level of brackets outside strings, in a skeleton of quotes and brackets."""
    deepest = level = 0
    inside = False
    for start in range(0, len(skeleton), _CHUNK):
        part = np.frombuffer(skeleton, dtype=np.int8, count=min(_CHUNK, len(skeleton) - start), offset=start)
        quotes = part == _QUOTE
        steps = (part == _OPEN).astype(np.int32) - (part == _CLOSE)
        within = np.cumsum(quotes, dtype=np.int32) % 2 == (0 if inside else 1)
        steps[within] = 0  # brackets inside a string are text
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
        inside = inside != bool(quotes.sum() % 2)
    return deepest


_BRACES = bytes.maketrans(b"{}", b"[]")


def _numbers_only(data: bytes, keys: int) -> bool:
    """True when the body's only strings are its ``keys`` keys and it holds no literal.

    Every key is a string written with two quotes (an escaped quote adds one), so
    two quotes per key leave none for a string value; true, false and null are
    looked for as text (a key that spells one only makes this say False). A few
    scans in C, where checking the type of every value of a large batch in Python
    costs as much as turning them into a matrix.
    """
    if data.count(b'"') != 2 * keys:
        return False
    # Each literal holds a "u" or an "l", which no number does: two one-byte searches (the
    # quickest kind) settle most bodies, and only one whose keys hold either letter is searched
    # for the literals themselves.
    if b"u" not in data and b"l" not in data:
        return True
    return b"true" not in data and b"false" not in data and b"null" not in data


def _no_key_lost(colons: int, document: Any) -> bool:
    """True when orjson cannot have merged two equal keys of the body.

    orjson keeps the last of two equal keys. Every key in the text is followed by
    a colon, so the keys it kept are at most the colons in the body; once the keys
    counted reach that number, none was lost. Otherwise (a colon inside a string,
    objects deeper than rows, a repeated key) the standard library reads the body
    again and decides.
    """
    if isinstance(document, dict) and len(document) == colons:  # {"instances": [[...], ...]}
        return True
    return _shallow_key_count(document) == colons


def _shallow_key_count(document: Any) -> int:
    """The keys of the body's objects down to its rows: a lower bound of all its keys."""
    if isinstance(document, list):
        return sum(len(item) for item in document if isinstance(item, dict))
    if not isinstance(document, dict):
        return 0
    count = len(document)
    for value in document.values():
        if isinstance(value, dict):
            count += len(value)
        elif isinstance(value, list):
            count += _shallow_key_count(value)
    return count


def _strict_loads(data: bytes) -> Any:
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
