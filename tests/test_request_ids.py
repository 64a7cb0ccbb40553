"""``X-Request-ID``: the client's own id when it is well-formed, else a new one."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

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
