"""The real server: Gunicorn with ``gunicorn.conf.py`` serving ``wsgi:app`` on a loopback port.

Each server runs as a child process with its own free port, model store and log
files, and is stopped by its pid. Every wait and every loop here is bounded, so
a stuck server fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests

from local_gunicorn import parent_pid
from service.models.store import ModelStore, sha256_of
from tests.helpers import corrupt, random_rows
from tests.servers import (
    FLASK,
    JSON,
    PROBLEM,
    REPO_ROOT,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    Server,
    http,
    launch,
    local_session,
    media_type,
    post_json,
    raw_exchange,
    running_server,
    server_env,
    wait_for_exit,
)

pytestmark = pytest.mark.integration

# --- Expected answers, computed in this process -------------------------------------


@dataclass(frozen=True)
class InProcessModel:
    """A stored model unpickled here, to predict what the server must answer."""

    name: str
    estimator: Any
    feature_names: tuple[str, ...]
    features: tuple[Any, ...]
    classes: tuple[Any, ...] | None

    @classmethod
    def load(cls, store: Path, name: str, version: str = "1") -> InProcessModel:
        manifest = ModelStore(store).manifest(name, version)
        estimator = joblib.load(store / name / version / manifest.artifact.file)
        return cls(name, estimator, manifest.feature_names, manifest.features, manifest.classes)

    def random_rows(self, rng: random.Random, count: int) -> list[dict[str, Any]]:
        """Valid rows drawn across each feature's whole accepted range."""
        return random_rows(self.features, rng, count)

    def expected(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        matrix = np.array([[row[name] for name in self.feature_names] for row in rows], dtype=np.float64)
        answer: dict[str, Any] = {"values": self.estimator.predict(matrix).tolist()}
        if self.classes is not None:
            answer["probabilities"] = self.estimator.predict_proba(matrix).tolist()
        return answer


def check_prediction(
    body: dict[str, Any], model: InProcessModel, expected: dict[str, Any], *, many: bool
) -> None:
    """The server's labels/values and probabilities equal the in-process ones."""
    assert body["model"] == model.name
    assert body["model_version"] == "1"
    if many:
        values, probabilities = body["predictions"], body.get("probabilities")
    else:
        values = [body["prediction"]]
        probabilities = [body["probabilities"]] if "probabilities" in body else None
    assert len(values) == len(expected["values"])
    if model.classes is None:
        assert probabilities is None
        for got, want in zip(values, expected["values"], strict=True):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (got, want)
        return
    assert values == expected["values"]
    assert probabilities is not None
    labels = [str(label) for label in model.classes]
    for got, want in zip(probabilities, expected["probabilities"], strict=True):
        assert list(got) == labels
        for label, probability in zip(labels, want, strict=True):
            assert math.isclose(got[label], probability, rel_tol=0, abs_tol=1e-9), (label, got, want)


def check_problem(response: requests.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert media_type(response) == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{slug}"
    assert body["title"]
    assert body["detail"]
    return body


# --- The demo store behind two workers ----------------------------------------------


@pytest.fixture(scope="module")
def demo_server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Gunicorn with two workers serving the demo models, shared by this module's read-only tests."""
    with running_server(demo_store_path, tmp_path_factory.mktemp("demo_server")) as server:
        yield server


@pytest.fixture(scope="module")
def demo_models(demo_store_path: Path) -> dict[str, InProcessModel]:
    return {
        name: InProcessModel.load(demo_store_path, name) for name in ("iris", "diabetes", "breast_cancer")
    }


@dataclass
class Call:
    """One request of the mixed load, with the check its answer must pass."""

    label: str
    method: str
    path: str
    check: Callable[[requests.Response], None]
    data: bytes | None = None
    content_type: str | None = JSON


def prediction_call(
    label: str, path: str, body: Any, model: InProcessModel, rows: list[dict[str, Any]], *, many: bool
) -> Call:
    expected = model.expected(rows)

    def check(response: requests.Response) -> None:
        assert response.status_code == 200, response.text
        assert media_type(response) == JSON
        check_prediction(response.json(), model, expected, many=many)

    return Call(label, "POST", path, check, data=json.dumps(body).encode())


def problem_call(
    label: str,
    method: str,
    path: str,
    status: int,
    slug: str,
    *,
    data: bytes | None = None,
    content_type: str | None = JSON,
    error_keys: tuple[str, ...] = (),
) -> Call:
    def check(response: requests.Response) -> None:
        body = check_problem(response, status, slug)
        for key in error_keys:
            assert key in body["errors"], body
        if status == 405:
            assert "POST" in response.headers["Allow"]

    return Call(label, method, path, check, data=data, content_type=content_type)


def mixed_calls(models: dict[str, InProcessModel], seed: int = 7) -> list[Call]:
    """About 400 requests: every body shape on three models, and every kind of client error."""
    rng = random.Random(seed)
    iris, diabetes, cancer = models["iris"], models["diabetes"], models["breast_cancer"]
    calls: list[Call] = []
    for _ in range(45):
        [row] = iris.random_rows(rng, 1)
        as_list = [row[name] for name in iris.feature_names]
        calls.append(prediction_call("iris flat", "/predict", row, iris, [row], many=False))
        calls.append(
            prediction_call(
                "iris features", "/v1/models/iris/predict", {"features": row}, iris, [row], many=False
            )
        )
        calls.append(
            prediction_call(
                "iris list", "/v1/models/iris/predict", {"features": as_list}, iris, [row], many=False
            )
        )
        rows = iris.random_rows(rng, rng.randint(1, 5))
        calls.append(
            prediction_call(
                "iris instances", "/v1/models/iris/predict", {"instances": rows}, iris, rows, many=True
            )
        )
    for _ in range(40):
        rows = cancer.random_rows(rng, rng.randint(1, 8))
        calls.append(
            prediction_call(
                "cancer batch", "/v1/models/breast_cancer/predict/batch", rows, cancer, rows, many=True
            )
        )
    for _ in range(40):
        [row] = diabetes.random_rows(rng, 1)
        calls.append(
            prediction_call("diabetes flat", "/v1/models/diabetes/predict", row, diabetes, [row], many=False)
        )
        rows = diabetes.random_rows(rng, 3)
        as_lists = [[r[name] for name in diabetes.feature_names] for r in rows]
        calls.append(
            prediction_call(
                "diabetes batch", "/v1/models/diabetes/predict/batch", as_lists, diabetes, rows, many=True
            )
        )
    for _ in range(20):
        [row] = iris.random_rows(rng, 1)
        calls.append(
            problem_call(
                "malformed", "POST", "/predict", 400, "malformed-request", data=json.dumps(row).encode()[:-3]
            )
        )
        calls.append(
            problem_call(
                "text/plain",
                "POST",
                "/predict",
                415,
                "unsupported-media-type",
                data=json.dumps(row).encode(),
                content_type="text/plain",
            )
        )
        calls.append(
            problem_call(
                "not a number",
                "POST",
                "/v1/models/iris/predict",
                422,
                "invalid-input",
                data=json.dumps({**row, "petal_length": "x"}).encode(),
                error_keys=("petal_length",),
            )
        )
        calls.append(
            problem_call(
                "unknown model",
                "POST",
                "/v1/models/no_such_model/predict",
                404,
                "model-not-found",
                data=json.dumps(row).encode(),
            )
        )
        calls.append(problem_call("GET predict", "GET", "/predict", 405, "method-not-allowed", data=None))
    rng.shuffle(calls)
    return calls


def send(server: Server, call: Call) -> requests.Response:
    headers = {"Content-Type": call.content_type} if call.content_type else {}
    return http(call.method, server.url(call.path), data=call.data, headers=headers)


def test_parallel_mixed_requests_all_answer_correctly(
    demo_server: Server, demo_models: dict[str, InProcessModel]
) -> None:
    """~400 parallel requests from 8 threads: every answer has the right status, JSON and prediction."""
    calls = mixed_calls(demo_models)
    assert len(calls) >= 400
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda call: send(demo_server, call), calls))
    failures = []
    for call, response in zip(calls, responses, strict=True):
        try:
            call.check(response)
        except (AssertionError, KeyError, ValueError) as error:
            failures.append(f"{call.label} {call.method} {call.path}: {error!r} -> {response.text[:300]}")
    assert not failures, f"{len(failures)} of {len(calls)} answers were wrong:\n" + "\n".join(failures[:10])


def probe_workers(server: Server, rounds: int = 10, burst: int = 32) -> dict[int, list[dict[str, Any]]]:
    """GET /v1/models/iris in parallel bursts until two workers have answered; answers by worker pid.

    Each request carries a unique X-Request-ID, so its access-log record names
    the worker that served it.
    """
    tag = f"probe{time.monotonic_ns()}"
    answers: dict[str, dict[str, Any]] = {}
    by_pid: dict[int, list[dict[str, Any]]] = {}

    def fetch(index: int) -> tuple[str, requests.Response]:
        request_id = f"{tag}-{index}"
        return request_id, http("GET", server.url("/v1/models/iris"), headers={"X-Request-ID": request_id})

    for round_number in range(rounds):
        with ThreadPoolExecutor(max_workers=8) as pool:
            for request_id, response in pool.map(
                fetch, range(round_number * burst, (round_number + 1) * burst)
            ):
                assert response.status_code == 200, response.text
                assert media_type(response) == JSON
                assert response.headers["X-Request-ID"] == request_id
                answers[request_id] = response.json()
        # A worker logs the access record after the answer is sent: wait (bounded) for all of them.
        deadline = time.monotonic() + 5
        while True:
            records = [r for r in server.access_log() if str(r.get("request_id", "")).startswith(tag)]
            logged = {record["request_id"]: int(record["pid"]) for record in records}
            if len(logged) >= len(answers) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert set(logged) == set(answers), "some probe requests are missing from the access log"
        assert len(records) == len(logged), "a probe request was logged twice"
        for record in records:
            assert (record["method"], record["path"], record["status"]) == ("GET", "/v1/models/iris", 200)
        by_pid = {}
        for request_id, pid in logged.items():
            by_pid.setdefault(pid, []).append(answers[request_id])
        if len(by_pid) >= 2:
            return by_pid
    pytest.fail(f"after {rounds} bursts of {burst} requests only workers {sorted(by_pid)} answered")


def test_both_workers_serve_and_are_children_of_the_master(demo_server: Server) -> None:
    """Requests are spread over two worker processes, both forked by the Gunicorn master."""
    by_pid = probe_workers(demo_server)
    master = demo_server.proc.pid
    assert master not in by_pid
    booted = set()
    for record in demo_server.log_records():
        message = str(record.get("message", ""))
        if record.get("logger") == "gunicorn.error" and message.startswith("Booting worker with pid"):
            # The worker itself logs its boot: the record's pid and the one in the message agree.
            assert message.rsplit(" ", 1)[1] == str(record["pid"]), record
            booted.add(int(record["pid"]))
    for pid in by_pid:
        assert parent_pid(pid) == master
        assert pid in booted


def test_workers_share_the_model_the_master_preloaded(demo_server: Server) -> None:
    """The master loads each model once before forking; every worker answers with that same load."""
    by_pid = probe_workers(demo_server)
    loads = [
        record
        for record in demo_server.log_records()
        if str(record.get("message", "")).startswith("loaded model iris version 1")
    ]
    assert len(loads) == 1, loads
    assert loads[0]["pid"] == demo_server.proc.pid
    assert loads[0]["logger"] == "service.models.registry"
    loaded_at = {pid: {answer["loaded_at"] for answer in answers} for pid, answers in by_pid.items()}
    assert len(loaded_at) >= 2
    assert len(set().union(*loaded_at.values())) == 1, loaded_at


def test_health_and_readiness(demo_server: Server) -> None:
    """/health is a JSON 200; /ready lists the three demo models, each ready."""
    health = http("GET", demo_server.url("/health"))
    assert health.status_code == 200
    assert media_type(health) == JSON
    assert health.json() == {"status": "ok"}
    ready = http("GET", demo_server.url("/ready"))
    assert ready.status_code == 200
    assert media_type(ready) == JSON
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["models"]) == {"iris", "diabetes", "breast_cancer"}
    assert all(model["ready"] and model["version"] == "1" for model in body["models"].values())


# --- Body size limit -------------------------------------------------------------------

BODY_LIMIT = 2048


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ],
    ids=["uri-too-long", "lowercase-method", "garbage", "bad-header", "bad-content-length"],
)
def test_malformed_http_is_answered_with_a_problem(
    demo_server: Server, request_bytes: bytes, status: int
) -> None:
    """Errors Gunicorn answers before the app sees the request are JSON too, never HTML."""
    got, headers, body = raw_exchange(demo_server, request_bytes)
    assert got == status
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "/problems/bad-http-request"
    assert problem["detail"] and b"<html" not in body


@pytest.fixture(scope="module")
def small_limit_server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker with a 2 KiB body limit."""
    with running_server(
        demo_store_path,
        tmp_path_factory.mktemp("small_limit_server"),
        SERVICE_WORKERS="1",
        SERVICE_MAX_BODY_BYTES=str(BODY_LIMIT),
    ) as server:
        yield server


def padded_iris_body(size: int) -> bytes:
    """A valid iris row, padded with JSON whitespace to exactly ``size`` bytes."""
    row = json.dumps({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
    body = row[:-1] + " " * (size - len(row)) + "}"
    assert len(body) == size
    return body.encode()


def chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(small_limit_server: Server, chunked: bool) -> None:
    """One byte over SERVICE_MAX_BODY_BYTES is a 413 problem; a body at the limit is served."""
    url = small_limit_server.url("/predict")
    headers = {"Content-Type": JSON}
    at_limit, over_limit = padded_iris_body(BODY_LIMIT), padded_iris_body(BODY_LIMIT + 1)
    with local_session() as session:
        refused = session.post(
            url, data=chunks(over_limit) if chunked else over_limit, headers=headers, timeout=REQUEST_TIMEOUT
        )
        body = check_problem(refused, 413, "request-entity-too-large")
        assert str(BODY_LIMIT) in body["detail"]
        # The connection (or a new one) still serves a body at the limit.
        served = session.post(
            url, data=chunks(at_limit) if chunked else at_limit, headers=headers, timeout=REQUEST_TIMEOUT
        )
        assert served.status_code == 200, served.text
        assert served.json()["prediction"] == "setosa"


# --- Refusing to start, and starting with one broken model -----------------------------


def refusal_messages(server: Server) -> list[dict[str, Any]]:
    """The records (stdout and stderr) in which the server said it refuses to start."""
    return [record for record in server.messages() if "refusing to start" in str(record.get("message", ""))]


def test_refuses_to_start_when_the_only_model_is_corrupted(demo_store_path: Path, tmp_path: Path) -> None:
    """A store whose only artifact fails its hash check: Gunicorn exits non-zero, naming model and hash."""
    store = tmp_path / "store"
    shutil.copytree(demo_store_path / "iris", store / "iris")
    artifact = store / "iris" / "1" / "model.joblib"
    corrupt(artifact)
    server = launch(store, tmp_path / "logs")
    code = wait_for_exit(server)
    assert code != 0, server.output()
    refusals = refusal_messages(server)
    assert len(refusals) == 1, server.output()
    refusal = refusals[0]["message"]
    assert refusals[0].get("level") == "ERROR"
    assert "'iris'" in refusal
    assert "SHA-256" in refusal
    assert sha256_of(artifact.read_bytes()) in refusal
    assert ModelStore(store).manifest("iris", "1").artifact.sha256 in refusal
    server.log_records()  # and every line of stdout is a JSON object


def test_refuses_to_start_on_an_empty_store(tmp_path: Path) -> None:
    """An empty store: Gunicorn exits non-zero and says the store holds no models."""
    store = tmp_path / "empty_store"
    store.mkdir()
    server = launch(store, tmp_path / "logs")
    code = wait_for_exit(server)
    assert code != 0, server.output()
    refusals = refusal_messages(server)
    assert len(refusals) == 1, server.output()
    refusal = refusals[0]["message"]
    assert "holds no models" in refusal
    assert str(store) in refusal
    server.log_records()


def test_one_broken_model_leaves_the_others_serving(
    store_path: Path, tmp_path: Path, demo_models: dict[str, InProcessModel]
) -> None:
    """With diabetes corrupted the server starts: /ready is a 503 naming it, the others still predict."""
    corrupt(store_path / "diabetes" / "1" / "model.joblib")
    with running_server(
        store_path, tmp_path / "logs", ready_path="/health", ready_statuses=frozenset({200})
    ) as server:
        ready = http("GET", server.url("/ready"))
        body = check_problem(ready, 503, "not-ready")
        assert "diabetes" in body["detail"]
        assert body["models"]["diabetes"]["ready"] is False
        assert "SHA-256" in body["models"]["diabetes"]["error"]
        assert body["models"]["iris"]["ready"] is True
        assert body["models"]["breast_cancer"]["ready"] is True

        rng = random.Random(3)
        for name in ("iris", "breast_cancer"):
            model = demo_models[name]
            rows = model.random_rows(rng, 4)
            response = post_json(server, f"/v1/models/{name}/predict/batch", rows)
            assert response.status_code == 200, response.text
            check_prediction(response.json(), model, model.expected(rows), many=True)

        [row] = demo_models["diabetes"].random_rows(rng, 1)
        refused = post_json(server, "/v1/models/diabetes/predict", row)
        assert "diabetes" in check_problem(refused, 503, "model-not-ready")["detail"]

        # SIGTERM stops the master and its workers cleanly.
        assert server.stop() == 0


# --- Bring your own model: native thread pools across fork -----------------------------


def add_with_cli(store: Path, artifact: Path, name: str) -> None:
    result = subprocess.run(
        [str(FLASK), "--app", "wsgi", "models", "add", str(artifact), "--name", name],
        cwd=REPO_ROOT,
        env=server_env(store),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"added {name} version 1" in result.stdout


# SVC(probability=True) is deprecated in scikit-learn 1.9 but still what many stored models are.
@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
def test_own_models_with_native_threads_predict_in_forked_workers(tmp_path: Path) -> None:
    """OpenMP, libsvm and joblib-threaded models, loaded before fork, predict in parallel in both workers."""
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X_hgb, y_hgb = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    X_svc, y_svc = make_classification(
        n_samples=200, n_features=4, n_informative=3, n_redundant=0, random_state=1
    )
    X_rf, y_rf = make_regression(n_samples=300, n_features=5, noise=5.0, random_state=2)
    estimators = {
        "hgb": (HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X_hgb, y_hgb), X_hgb),
        "svc": (
            make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(
                X_svc, np.array(["neg", "pos"])[y_svc]
            ),
            X_svc,
        ),
        "forest": (RandomForestRegressor(n_estimators=40, n_jobs=2, random_state=0).fit(X_rf, y_rf), X_rf),
    }
    store = tmp_path / "store"
    store.mkdir()
    for name, (estimator, _) in estimators.items():
        artifact = tmp_path / f"{name}.joblib"
        joblib.dump(estimator, artifact)
        add_with_cli(store, artifact, name)

    rng = np.random.default_rng(5)
    calls: list[tuple[str, list[list[float]]]] = []
    for name, (_, X) in estimators.items():
        for _ in range(20):
            calls.append((name, X[rng.choice(len(X), size=8, replace=False)].tolist()))
    random.Random(5).shuffle(calls)

    def check(name: str, rows: list[list[float]], response: requests.Response) -> None:
        assert response.status_code == 200, f"{name}: {response.text}"
        body = response.json()
        estimator = estimators[name][0]
        matrix = np.array(rows)
        assert body["model"] == name
        if name == "forest":
            for got, want in zip(body["predictions"], estimator.predict(matrix), strict=True):
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
            return
        assert body["predictions"] == estimator.predict(matrix).tolist()
        labels = [str(label) for label in estimator.classes_]
        for got, want in zip(body["probabilities"], estimator.predict_proba(matrix), strict=True):
            assert list(got) == labels
            assert np.allclose([got[label] for label in labels], want, rtol=0, atol=1e-9)

    # Two model threads per worker: the native pools really start, in processes forked
    # from a master that already ran each model once (its warm-up prediction).
    with running_server(store, tmp_path / "logs", SERVICE_MODEL_THREADS="2") as server:

        def predict(call: tuple[str, list[list[float]]]) -> requests.Response:
            name, rows = call
            return http("POST", server.url(f"/v1/models/{name}/predict/batch"), json={"instances": rows})

        pids: set[int] = set()
        for _ in range(4):  # more rounds only if one worker took every request
            with ThreadPoolExecutor(max_workers=6) as pool:
                responses = list(pool.map(predict, calls))
            for (name, rows), response in zip(calls, responses, strict=True):
                check(name, rows, response)
            time.sleep(0.2)  # access lines are written just after the answers
            pids = {int(r["pid"]) for r in server.access_log() if str(r["path"]).endswith("/predict/batch")}
            if len(pids) >= 2:
                break
    assert len(pids) == 2, f"only workers {pids} served the predictions"
