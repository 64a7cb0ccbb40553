"""API keys on the real server: keys made by the real command, every worker refusing a revoked one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import FLASK, Server, http, run_in_repo, running_server

pytestmark = pytest.mark.integration

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def predict(server: Server, path: str, key: str | None = None):
    headers = {"X-API-Key": key} if key else {}
    return http("POST", server.url(path), json=SETOSA, headers=headers)


def keys_command(store: Path, keys_file: Path, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "FLASK_"))}
    env.update(SERVICE_MODEL_STORE=str(store), SERVICE_API_KEYS_FILE=str(keys_file))
    result = run_in_repo([str(FLASK), "--app", "wsgi", "keys", *args], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def keyed(
    demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, str]]:
    folder = tmp_path_factory.mktemp("auth")
    keys_file = folder / "keys"
    key = keys_command(demo_store_path, keys_file, "create", "dashboard")
    with running_server(
        demo_store_path, folder, SERVICE_WORKERS="2", SERVICE_API_KEYS_FILE=str(keys_file)
    ) as server:
        yield server, keys_file, key


def test_a_key_made_by_the_command_opens_the_api(keyed: tuple[Server, Path, str]) -> None:
    server, _, key = keyed
    refused = predict(server, "/v1/models/iris/predict")
    assert refused.status_code == 401
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    for _ in range(6):  # both workers, on fresh connections
        answer = predict(server, "/v1/models/iris/predict", key)
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == "setosa"
    assert http("GET", server.url("/ready")).status_code == 200
    records = [record for record in server.log_records() if record.get("logger") == "service.access"]
    assert {
        record["client"] for record in records if record["status"] == 200 and record["path"].startswith("/v1")
    } == {"dashboard"}
    assert key not in server.stdout() + server.stderr()


def test_every_worker_refuses_a_revoked_key_within_seconds(
    keyed: tuple[Server, Path, str], demo_store_path: Path
) -> None:
    server, keys_file, _ = keyed
    temporary = keys_command(demo_store_path, keys_file, "create", "temporary")
    deadline = time.monotonic() + 10
    while predict(server, "/predict", temporary).status_code != 200:
        assert time.monotonic() < deadline, "a new key was not accepted within 10 s"
        time.sleep(0.2)
    keys_command(demo_store_path, keys_file, "revoke", "temporary")
    time.sleep(1.5)  # each worker looks at the file at most once a second
    statuses = {predict(server, "/predict", temporary).status_code for _ in range(8)}
    assert statuses == {401}
