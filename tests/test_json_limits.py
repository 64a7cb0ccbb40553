"""JSON bodies nested too deep or holding too long a string: 413 before they are parsed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api import body
from service.api.body import JsonLimits, check_shape
from service.errors import JsonTooLarge

ROW = [5.1, 3.5, 1.4, 0.2]


def nested(levels: int) -> Any:
    value: Any = 1.0
    for _ in range(levels - 1):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


def post(client: FlaskClient, body: Any) -> Any:
    return client.post(
        "/v1/models/iris/predict/batch", data=json.dumps(body), content_type="application/json"
    )


def assert_too_large(response: Any, words: str) -> None:
    assert response.status_code == 413
    problem = response.get_json()
    assert problem["type"] == "/problems/json-too-large"
    assert words in problem["detail"]


def test_a_body_deeper_than_the_limit_is_413(client: FlaskClient) -> None:
    # The envelope and the list of rows are levels 1 and 2: lists nested to level 33.
    assert_too_large(post(client, {"instances": [nested(32)]}), "33 levels deep; at most 32")
    at_limit = post(client, {"instances": [nested(31)]})
    assert at_limit.status_code in (400, 422)  # as deep as allowed: judged, and refused as a row


def test_a_string_longer_than_the_limit_is_413(client: FlaskClient) -> None:
    assert_too_large(post(client, {"instances": [ROW], "x" * 1025: 1}), "1025 bytes long; at most 1024")
    long_value = post(client, {"instances": [{"sepal_length": "y" * 2000}]})
    assert_too_large(long_value, "2000 bytes long")
    at_limit = post(client, {"instances": [ROW], "x" * 1024: 1})
    assert at_limit.status_code in (400, 422)  # an unknown key, not a long one


def test_a_deep_body_within_the_size_limit_is_refused_without_recursion(client: FlaskClient) -> None:
    body = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_too_large(client.post("/predict/batch", data=body, content_type="application/json"), "levels deep")


def test_brackets_and_escaped_quotes_inside_strings_are_text(client: FlaskClient) -> None:
    tricky = '[[[[{"\\"' * 20
    response = post(client, {"instances": [ROW], tricky: 1})
    assert response.status_code in (400, 422)  # judged: an unknown key, not a deep body


def test_the_limits_are_settings(make_app: Callable[..., Flask], demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_json_depth=3, max_string_bytes=20).test_client()
    assert post(client, {"instances": [ROW]}).status_code == 200
    assert_too_large(post(client, {"instances": [[ROW]]}), "4 levels deep; at most 3")
    assert_too_large(post(client, {"instances": [ROW], "k" * 21: 1}), "21 bytes long; at most 20")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(alphabet='[]{}"\\ab\u00e9,:', max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=6), children, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(
    document=JSON_VALUES,
    limit=st.integers(min_value=1, max_value=8),
    chunk=st.sampled_from([3, 7, 1 << 16]),
    few=st.sampled_from([0, 4096]),
)
def test_the_depth_read_from_the_text_is_the_documents(
    document: Any, limit: int, chunk: int, few: int
) -> None:
    """Strings full of brackets, quotes and backslashes never change the depth read from the text,
    split at its quotes or scanned in chunks (wherever the chunks happen to end)."""
    data = json.dumps(document).encode()
    limits = JsonLimits(depth=limit, string_bytes=10_000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body, "_CHUNK", chunk)
        patch.setattr(body, "_FEW_STRINGS", few)  # 0: every body scanned in chunks
        if depth_of(document) > limit:
            with pytest.raises(JsonTooLarge):
                check_shape(data, limits)
        else:
            check_shape(data, limits)
        text = body._ESCAPE.sub(b"", data)
        longest = body._longest_string(text)
    assert longest == body._longest_string(text)  # the same, read in one chunk
