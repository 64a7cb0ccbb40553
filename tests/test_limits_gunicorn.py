"""Rate limits that hold across workers and servers, counted in a real Redis, and Redis going down."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.observed import Metrics
from tests.redis_server import RedisServer, running_redis
from tests.servers import Server, http, running_server

pytestmark = pytest.mark.integration

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def predict(server: Server) -> int:
    # A fresh connection each time, so that the requests spread over the workers.
    return http("POST", server.url("/predict"), json=SETOSA).status_code


def statuses(servers: list[Server], requests: int) -> Counter[int]:
    """``requests`` predictions at once (8 in flight), spread over ``servers`` in turn."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return Counter(pool.map(predict, [servers[i % len(servers)] for i in range(requests)]))


def limited_server(store: Path, folder: Path, redis_server: RedisServer, limit: str) -> Any:
    """Two workers counting ``limit`` in ``redis_server``."""
    return running_server(
        store,
        folder,
        SERVICE_WORKERS="2",
        SERVICE_RATE_LIMIT=limit,
        SERVICE_RATE_LIMIT_STORAGE=redis_server.url,
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


def test_two_workers_let_exactly_n_requests_through(
    demo_store_path: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    with limited_server(demo_store_path, tmp_path / "one", redis_server, "7/hour") as server:
        answered = statuses([server], 20)
        # Until both workers have answered (a 429 from the one that let nothing through
        # shows that it counts with the other), at most 10 more rounds.
        for _ in range(10):
            pids = {record["pid"] for record in server.log_records() if record.get("status") in (200, 429)}
            if len(pids) == 2:
                break
            answered += statuses([server], 20)
        assert len(pids) == 2, "one worker answered every request"
        assert answered[200] == 7 and sum(answered.values()) == answered[200] + answered[429]


def test_two_servers_sharing_a_redis_share_the_limit(
    demo_store_path: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = {
        "SERVICE_WORKERS": "1",
        "SERVICE_RATE_LIMIT": "6/hour",
        "SERVICE_RATE_LIMIT_STORAGE": redis_server.url,
    }
    with (
        running_server(demo_store_path, tmp_path / "a", **settings) as first,
        running_server(demo_store_path, tmp_path / "b", **settings) as second,
    ):
        assert statuses([first, second], 16) == Counter({200: 6, 429: 10})


def test_memory_counts_are_each_workers_own(demo_store_path: Path, tmp_path: Path) -> None:
    with running_server(
        demo_store_path, tmp_path, SERVICE_WORKERS="1", SERVICE_RATE_LIMIT="3/hour"
    ) as server:
        assert statuses([server], 6) == Counter({200: 3, 429: 3})


def test_the_service_keeps_serving_when_redis_goes_down(
    demo_store_path: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    with limited_server(demo_store_path, tmp_path / "server", redis_server, "1000/hour") as server:
        assert statuses([server], 4) == Counter({200: 4})
        redis_server.stop()
        assert statuses([server], 12) == Counter({200: 12})
        scraped = Metrics(http("GET", server.url("/metrics")).text)
        assert scraped.value("rate_limit_storage_errors_total") >= 12
        lines = [
            record
            for record in server.log_records()
            if record.get("logger") == "flask-limiter" and "let through" in record.get("message", "")
        ]
        assert 1 <= len(lines) <= 2, "one line per worker, not one per request"
