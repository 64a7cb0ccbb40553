"""``X-Request-ID`` and ``X-Process-Time`` on every answer: the client's own id when it is
well-formed, else a new one, and the id quoted in a 500's problem."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api.request_ids import new_id
from tests.helpers import SETOSA, boom
from tests.servers import JSON

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("sent", ["abc-123\n", "abc-123\r\n", "\nabc-123", "abc\n123"])
def test_an_id_with_a_line_break_is_replaced(client: FlaskClient, sent: str) -> None:
    """A line break could forge a log line: the id is replaced, and the request still answers.

    Werkzeug's test client refuses header values with line breaks, so the id goes
    straight into the WSGI environment, as a server that let one through would pass it.
    """
    answer = client.get("/health", environ_overrides={"HTTP_X_REQUEST_ID": sent})
    assert answer.status_code == 200
    assigned = answer.headers["X-Request-ID"]
    assert NEW_ID.fullmatch(assigned), assigned
    assert assigned != sent.strip()


def test_a_well_formed_id_is_kept_up_to_its_length_limit(client: FlaskClient) -> None:
    longest = "a" * 128
    assert client.get("/health", headers={"X-Request-ID": longest}).headers["X-Request-ID"] == longest
    assert NEW_ID.fullmatch(
        client.get("/health", headers={"X-Request-ID": longest + "a"}).headers["X-Request-ID"]
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/metrics", 200),
        ("POST", "/predict", 200),
        ("GET", "/no/such/route", 404),
        ("GET", "/predict", 405),
        ("POST", "/v1/models/no_such_model/predict", 404),
    ],
)
def test_every_response_carries_request_id_and_process_time(
    fresh_app: Flask, method: str, path: str, status: int
) -> None:
    client = fresh_app.test_client()
    body = json.dumps(SETOSA) if method == "POST" else None
    own = client.open(path, method=method, data=body, content_type=JSON, headers={"X-Request-ID": "abc-1"})
    assert own.status_code == status
    assert own.headers["X-Request-ID"] == "abc-1"
    assert float(own.headers["X-Process-Time"]) >= 0
    assert re.fullmatch(r"\d+\.\d{6}", own.headers["X-Process-Time"])

    new = client.open(path, method=method, data=body, content_type=JSON)
    assert new.status_code == status
    assert NEW_ID.fullmatch(new.headers["X-Request-ID"])
    assert float(new.headers["X-Process-Time"]) >= 0


def test_well_formed_request_ids_are_kept(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    for request_id in ("a", "A.b_c-d:e", "0" * 128, "2f1c9e4e-5d1a-4a86-9c43-6f7b0e1b3f5a"):
        response = client.get("/health", headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id


def test_malformed_request_ids_are_replaced(fresh_app: Flask) -> None:
    """Too long, empty or with characters that could forge a log line: a fresh id instead."""
    client = fresh_app.test_client()
    seen = set()
    for request_id in ("", "x" * 129, "two words", 'quo"te', "<script>", "a;b", "id\tx", "é"):
        response = client.get("/health", headers={"X-Request-ID": request_id})
        replaced = response.headers["X-Request-ID"]
        assert replaced != request_id
        assert NEW_ID.fullmatch(replaced)
        seen.add(replaced)
    assert len(seen) == 8  # a new id each time


def test_a_500_quotes_the_request_id_of_its_header(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(model_store=tmp_path)
    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom", headers={"X-Request-ID": "report-me"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "report-me"
    assert response.get_json()["request_id"] == "report-me"
    assert "kaboom" not in response.get_data(as_text=True)


def test_new_ids_are_version_4_uuids_that_forked_workers_never_repeat() -> None:
    """Gunicorn's workers are forks of one process: each draws ids of its own."""
    drawn = [new_id() for _ in range(1000)]
    assert len(set(drawn)) == len(drawn)
    assert all(uuid.UUID(hex=found).version == 4 and found == uuid.UUID(hex=found).hex for found in drawn)
    children = []
    for _ in range(2):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker: its first ids go back to the test
            os.write(write_end, " ".join(new_id() for _ in range(3)).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            children.append(pipe.read().decode().split())
        os.waitpid(pid, 0)
    assert set(children[0]).isdisjoint(children[1]), children
    assert set(children[0] + children[1]).isdisjoint([new_id() for _ in range(3)])
