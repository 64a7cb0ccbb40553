"""API keys: who may call which route, how a key is sent, and where the client's name shows."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from service.keyring import RELOAD_SECONDS, KeyRing, add_client, digest
from tests.observed import read_audit

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
DIABETES_ROUTE = "/v1/models/diabetes/predict"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def keys(keys_file: Path) -> dict[str, str]:
    """Two clients: one for every model, one for iris alone."""
    return {
        "ops": add_client(keys_file, "ops", None),
        "iris-app": add_client(keys_file, "iris-app", ["iris"]),
    }


@pytest.fixture
def guarded(
    make_app: Callable[..., Flask], demo_store_path: Path, keys_file: Path, keys: dict[str, str]
) -> Flask:
    return make_app(model_store=demo_store_path, api_keys_file=keys_file)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_unauthorized(response, detail_part: str) -> None:
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    body = response.get_json()
    assert body["type"] == "/problems/unauthorized"
    assert detail_part in body["detail"]


def test_without_a_keys_file_no_key_is_asked(client: FlaskClient) -> None:
    assert client.post("/predict", json=SETOSA).status_code == 200
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("POST", "/predict/batch"),
        ("POST", "/v1/models/iris/predict"),
        ("POST", "/v1/models/iris/predict/batch"),
        ("POST", "/v1/models/iris/predict/csv"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/iris"),
        ("GET", "/metadata"),
        ("GET", "/no/such/route"),
    ],
)
def test_every_api_route_asks_for_a_key(guarded: Flask, method: str, path: str) -> None:
    response = guarded.test_client().open(path, method=method, json=SETOSA)
    assert_unauthorized(response, "X-API-Key")


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc"])
def test_probes_metrics_and_docs_stay_open(guarded: Flask, path: str) -> None:
    assert guarded.test_client().get(path).status_code == 200


def test_the_pages_stay_open_and_ask_for_the_key(guarded: Flask) -> None:
    page = guarded.test_client().get("/models/iris", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert 'id="api-key"' in page.get_data(as_text=True)


def test_a_page_asks_for_no_key_when_keys_are_off(client: FlaskClient) -> None:
    page = client.get("/models/iris", headers={"Accept": "text/html"})
    assert 'id="api-key"' not in page.get_data(as_text=True)


@pytest.mark.parametrize(
    ("setting", "path"), [("protect_metrics", "/metrics"), ("protect_docs", "/openapi.json")]
)
def test_a_setting_protects_metrics_and_docs(
    make_app: Callable[..., Flask],
    demo_store_path: Path,
    keys_file: Path,
    keys: dict[str, str],
    setting: str,
    path: str,
) -> None:
    app = make_app(model_store=demo_store_path, api_keys_file=keys_file, **{setting: True})
    client = app.test_client()
    assert_unauthorized(client.get(path), "API key")
    assert client.get(path, headers={"X-API-Key": keys["ops"]}).status_code == 200
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"X-API-Key": key},
        lambda key: {"X-API-Key": f"  {key} "},
        lambda key: bearer(key),
        lambda key: {"Authorization": f"bearer {key}"},
    ],
    ids=["x-api-key", "x-api-key with spaces", "bearer", "bearer lower-case"],
)
def test_a_known_key_is_accepted_in_either_header(guarded: Flask, keys: dict[str, str], headers) -> None:
    response = guarded.test_client().post("/predict", json=SETOSA, headers=headers(keys["ops"]))
    assert response.status_code == 200
    assert response.get_json()["prediction"] == "setosa"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "sks_not-a-key-of-this-service"},
        {"Authorization": "Bearer sks_not-a-key-of-this-service"},
        {"Authorization": "Basic b3BzOnNlY3JldA=="},
        {"X-API-Key": ""},
    ],
    ids=["unknown x-api-key", "unknown bearer", "basic scheme", "empty"],
)
def test_an_unknown_or_missing_key_is_refused(guarded: Flask, headers: dict[str, str]) -> None:
    response = guarded.test_client().post("/predict", json=SETOSA, headers=headers)
    expected = "not known" if "sks_" in json.dumps(headers) else "needs an API key"
    assert_unauthorized(response, expected)


def test_a_hash_sent_as_the_key_is_refused(guarded: Flask, keys: dict[str, str]) -> None:
    stored = digest(keys["ops"]).hex()
    for sent in (stored, f"sha256:{stored}"):
        assert (
            guarded.test_client().post("/predict", json=SETOSA, headers={"X-API-Key": sent}).status_code
            == 401
        )


def test_a_key_limited_to_models_gets_403_on_the_others(guarded: Flask, keys: dict[str, str]) -> None:
    client = guarded.test_client()
    limited = {"X-API-Key": keys["iris-app"]}
    assert client.post("/v1/models/iris/predict", json=SETOSA, headers=limited).status_code == 200
    assert client.post("/predict", json=SETOSA, headers=limited).status_code == 200  # iris is the default
    for response in (
        client.post(DIABETES_ROUTE, json={"age": 0.0}, headers=limited),
        client.get("/v1/models/diabetes", headers=limited),
    ):
        assert response.status_code == 403
        assert response.mimetype == "application/problem+json"
        problem = response.get_json()
        assert problem["type"] == "/problems/forbidden"
        assert "iris-app" in problem["detail"] and "diabetes" in problem["detail"]
        assert keys["iris-app"] not in response.get_data(as_text=True)
    listed = client.get("/v1/models", headers=limited).get_json()
    assert [model["name"] for model in listed["models"]] == ["iris"]
    everything = client.get("/v1/models", headers={"X-API-Key": keys["ops"]}).get_json()
    assert len(everything["models"]) > 1


def test_a_preflight_needs_no_key(guarded: Flask) -> None:
    assert guarded.test_client().options("/v1/models/iris/predict").status_code == 204


def test_the_client_name_is_logged_and_counted_never_the_key(
    make_app: Callable[..., Flask],
    demo_store_path: Path,
    keys_file: Path,
    keys: dict[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    audit = tmp_path / "audit.jsonl"
    app = make_app(model_store=demo_store_path, api_keys_file=keys_file, prediction_log=audit)
    client = app.test_client()
    capfd.readouterr()
    for headers, status in ((bearer(keys["ops"]), 200), ({"X-API-Key": "sks_wrong"}, 401)):
        response = client.post("/predict", json=SETOSA, headers=headers)
        assert response.status_code == status
        response.close()  # the access record is written when the answer is closed
    app.extensions["service"].audit.close()
    output = capfd.readouterr()
    records = [json.loads(line) for line in output.out.splitlines() if line.startswith("{")]
    access = [record for record in records if record.get("logger") == "service.access"]
    assert [(record["status"], record["client"]) for record in access] == [(200, "ops"), (401, None)]
    [line] = read_audit(audit)
    assert line["client"] == "ops"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'sklearn_service_client_requests_total{client="ops",status="200"} 1.0' in metrics
    everything = output.out + output.err + audit.read_text() + metrics
    assert keys["ops"] not in everything and "sks_wrong" not in everything


def test_the_openapi_document_declares_the_keys(guarded: Flask, client: FlaskClient) -> None:
    document = guarded.test_client().get("/openapi.json").get_json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"] == {"type": "http", "scheme": "bearer"}
    predict = document["paths"]["/v1/models/iris/predict"]["post"]
    assert predict["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert {"401", "403"} <= set(predict["responses"])
    listing = document["paths"]["/v1/models"]["get"]
    assert "401" in listing["responses"] and "403" not in listing["responses"]
    health = document["paths"]["/health"]["get"]
    assert "security" not in health and "401" not in health["responses"]
    open_document = client.get("/openapi.json").get_json()
    assert "securitySchemes" not in open_document.get("components", {})
    assert "401" not in open_document["paths"]["/v1/models/iris/predict"]["post"]["responses"]


def _touch_later(path: Path) -> None:
    """Move the file's change time past the ring's last look, as a real edit a second later would."""
    later = time.time() + 2
    os.utime(path, (later, later))


def test_keys_created_and_revoked_take_effect_without_a_restart(
    guarded: Flask, keys_file: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = guarded.test_client()
    clock = [time.monotonic()]
    monkeypatch.setattr("service.keyring.time.monotonic", lambda: clock[0])
    newcomer = add_client(keys_file, "newcomer", None)
    _touch_later(keys_file)
    clock[0] += RELOAD_SECONDS
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": newcomer}).status_code == 200
    runner = guarded.test_cli_runner()
    result: Result = runner.invoke(args=["keys", "revoke", "newcomer"])
    assert result.exit_code == 0, result.output
    _touch_later(keys_file)
    clock[0] += RELOAD_SECONDS
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": newcomer}).status_code == 401
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": keys["ops"]}).status_code == 200


def test_a_broken_keys_file_keeps_the_keys_read_before(keys_file: Path, keys: dict[str, str]) -> None:
    ring = KeyRing(keys_file)
    assert ring.client(keys["ops"]).name == "ops"
    keys_file.write_text("this is not a key line\n")
    _touch_later(keys_file)
    ring._checked -= RELOAD_SECONDS
    assert ring.client(keys["ops"]).name == "ops"


def test_a_missing_keys_file_lets_nobody_in(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "absent")
    assert ring.client("sks_anything") is None
    assert ring.client(None) is None


def test_the_cli_creates_lists_and_revokes_keys(guarded: Flask, keys_file: Path) -> None:
    runner = guarded.test_cli_runner()
    created = runner.invoke(args=["keys", "create", "reporting", "--models", "iris,diabetes"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("sks_") and len(key) > 40
    text = keys_file.read_text()
    assert key not in text
    assert f"sha256:{digest(key).hex()} reporting iris,diabetes" in text
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    listed = runner.invoke(args=["keys", "list"])
    assert "reporting" in listed.stdout and "diabetes, iris" in listed.stdout and key not in listed.stdout
    again = runner.invoke(args=["keys", "create", "reporting"])
    assert again.exit_code != 0 and "already has a key" in again.output
    assert runner.invoke(args=["keys", "revoke", "reporting"]).exit_code == 0
    assert "reporting" not in keys_file.read_text()
    missing = runner.invoke(args=["keys", "revoke", "reporting"])
    assert missing.exit_code != 0 and "no client named" in missing.output
    bad = runner.invoke(args=["keys", "create", "no spaces allowed"])
    assert bad.exit_code != 0
