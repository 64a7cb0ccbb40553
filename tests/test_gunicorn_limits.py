"""Gunicorn's own request limits and answer headers, over raw sockets to the real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, http, raw_exchange, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(demo_store_path, tmp_path_factory.mktemp("limits"), SERVICE_WORKERS="1") as running:
        yield running


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /health?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(60))
            + b"\r\n",
            431,
        ),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    ],
    ids=["request line over 4 KiB", "60 header fields", "a header over 8 KiB"],
)
def test_gunicorn_refuses_oversized_requests_as_problems(
    server: Server, request_bytes: bytes, status: int
) -> None:
    answered, headers, body = raw_exchange(server, request_bytes)
    assert answered == status
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == status


def test_answers_name_no_server_version(server: Server) -> None:
    for response in (http("GET", server.url("/health")), http("POST", server.url("/predict"), json={})):
        assert response.headers["Server"] == "gunicorn"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    prediction = http("POST", server.url("/predict"), json={"features": [5.1, 3.5, 1.4, 0.2]})
    assert prediction.status_code == 200 and prediction.headers["Cache-Control"] == "no-store"
