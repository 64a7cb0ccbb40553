"""The mixed load of test_observability_gunicorn.py: 300 requests, and what each must leave behind.

Predictions of every shape on the three demo models, and every kind of client
error, each with the metrics labels, access-log fields and audit rows it must
produce, so that the test can account for all of them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.helpers import feature_names, stored_model_rows
from tests.servers import JSON

STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Sent:
    """One request of the load and everything it must leave behind."""

    request_id: str
    method: str
    path: str
    status: int
    route: str  # the metrics label, and the access log's route
    problem: str | None = None
    model: str | None = None  # in the access log
    data: bytes | None = None
    content_type: str | None = JSON
    rows: list[dict[str, Any]] | None = None  # rows read from the body, if the request got that far
    many: bool = False
    response: requests.Response | None = None

    @property
    def method_label(self) -> str:
        return self.method if self.method in STANDARD_METHODS else "other"

    @property
    def outcome(self) -> str | None:
        if self.rows is None:
            return None
        return "success" if self.status == 200 else "invalid"


def load_plan(store: Path, prefix: str, seed: int) -> list[Sent]:
    """300 requests: predictions of every shape on three models, and every kind of client error."""
    rng = random.Random(seed)
    plan: list[Sent] = []

    def add(**fields: Any) -> None:
        plan.append(Sent(request_id=f"{prefix}-{len(plan)}", **fields))

    def prediction(
        path: str,
        route: str,
        model: str,
        body: Any,
        rows: list[dict[str, Any]],
        many: bool,
        status: int = 200,
        problem: str | None = None,
    ) -> None:
        add(
            method="POST",
            path=path,
            status=status,
            route=route,
            problem=problem,
            model=model,
            data=json.dumps(body).encode(),
            rows=rows,
            many=many,
        )

    one = "/v1/models/<name>/predict"
    batch = "/v1/models/<name>/predict/batch"
    iris_names = feature_names(store, "iris")
    diabetes_names = feature_names(store, "diabetes")
    for _ in range(40):
        rows = stored_model_rows(store, "iris", rng, 1)
        prediction("/predict", "/predict", "iris", rows[0], rows, many=False)
    for _ in range(30):
        rows = stored_model_rows(store, "iris", rng, 1)
        prediction("/v1/models/iris/predict", one, "iris", {"features": rows[0]}, rows, many=False)
    for _ in range(30):
        rows = stored_model_rows(store, "iris", rng, rng.randint(2, 5))
        as_lists = [[row[name] for name in iris_names] for row in rows]
        prediction("/v1/models/iris/predict", one, "iris", {"instances": as_lists}, rows, many=True)
    for _ in range(30):
        rows = stored_model_rows(store, "breast_cancer", rng, rng.randint(1, 8))
        prediction("/v1/models/breast_cancer/predict/batch", batch, "breast_cancer", rows, rows, many=True)
    for _ in range(25):
        rows = stored_model_rows(store, "diabetes", rng, 1)
        prediction("/v1/models/diabetes/predict", one, "diabetes", rows[0], rows, many=False)
    for _ in range(25):
        rows = stored_model_rows(store, "diabetes", rng, 3)
        as_lists = [[row[name] for name in diabetes_names] for row in rows]
        prediction("/v1/models/diabetes/predict/batch", batch, "diabetes", as_lists, rows, many=True)
    for _ in range(15):  # a 2-row batch with one row not a number: 2 invalid rows
        rows = stored_model_rows(store, "iris", rng, 2)
        rows[1]["petal_length"] = "x"
        prediction("/v1/models/iris/predict/batch", batch, "iris", rows, rows, True, 422, "invalid-input")
    for _ in range(10):
        rows = stored_model_rows(store, "diabetes", rng, 1)
        rows[0]["age"] = 40.5  # age is a whole number
        prediction("/v1/models/diabetes/predict", one, "diabetes", rows[0], rows, False, 422, "invalid-input")
    for _ in range(15):
        [row] = stored_model_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/v1/models/no_such_model/predict",
            status=404,
            route=one,
            problem="model-not-found",
            data=json.dumps(row).encode(),
        )
    for index in range(15):
        add(method="GET", path=f"/no/such/route/{index}", status=404, route="unmatched", problem="not-found")
    for _ in range(15):
        [row] = stored_model_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/predict",
            status=415,
            route="/predict",
            problem="unsupported-media-type",
            model="iris",
            data=json.dumps(row).encode(),
            content_type="text/plain",
        )
    for _ in range(15):
        [row] = stored_model_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/predict",
            status=400,
            route="/predict",
            problem="malformed-request",
            model="iris",
            data=json.dumps(row).encode()[:-3],
        )
    for _ in range(10):
        add(method="GET", path="/predict", status=405, route="unmatched", problem="method-not-allowed")
    for _ in range(5):
        add(
            method="PURGE",
            path="/v1/models/iris/predict",
            status=405,
            route="unmatched",
            problem="method-not-allowed",
        )
    for _ in range(10):
        add(method="GET", path="/health", status=200, route="/health")
    for _ in range(10):
        add(method="GET", path="/v1/models/iris", status=200, route="/v1/models/<name>")
    assert len(plan) == 300
    rng.shuffle(plan)
    return plan
