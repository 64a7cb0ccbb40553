"""Micro-batching on and off, side by side: ``python -m bench.batching_check [--seconds 10 --rounds 3]``.

Starts the service twice over the demo models (2 workers, the default threads),
``SERVICE_BATCHING=on`` and ``off``, and loads each with wrk: the 200-tree
forest (breast_cancer) and iris with single rows at 64 connections, iris at 8.
Rounds alternate the two servers, as the machine is shared and noisy; the
medians are printed. A quick check while ``make bench`` grows these scenarios.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.wrk import run as wrk_run
from local_gunicorn import Server, request
from service.models import ModelStore
from service.models.demo import DEMOS, train

SCENARIOS = (("breast_cancer", 64), ("iris", 8), ("iris", 64))
IN_FLIGHT = "sklearn_service_http_requests_in_flight"


def drained(server: Server, seconds: float = 60) -> None:
    """Wait until the server holds no request but the scrape that asks: requests wrk left behind
    would otherwise take CPU from the next measurement."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, scrape = request(server.url("/metrics"))
        held = [line for line in scrape.decode().splitlines() if line.startswith(IN_FLIGHT + " ")]
        if held and float(held[0].split()[1]) <= 1:
            return
        time.sleep(0.2)


def single_row_bodies(store: ModelStore, name: str, directory: Path, count: int = 200) -> Path:
    """``count`` distinct single rows within the manifest's ranges, one JSON body a line."""
    rng = random.Random(0)
    features = store.manifest(name, "1").features
    path = directory / f"{name}.jsonl"
    lines = [
        json.dumps({"features": [round(rng.uniform(f.min, f.max), 3) for f in features]})
        for _ in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batching-check-"))
    store = ModelStore(work / "store")
    for demo in DEMOS:
        train(demo, store)
    bodies = {name: single_row_bodies(store, name, work) for name, _ in SCENARIOS}
    servers = {
        mode: Server.start_service(
            store.root, work / "logs", name=f"batching-{mode}", SERVICE_WORKERS="2", SERVICE_BATCHING=mode
        )
        for mode in ("on", "off")
    }
    results: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
    try:
        for server in servers.values():
            server.wait_until_answering("/ready", timeout=120)
        for _ in range(args.rounds):
            for name, connections in SCENARIOS:
                for mode, server in servers.items():
                    path = f"/v1/models/{name}/predict"
                    for seconds in (2, args.seconds):  # a warm-up, then the run
                        done = wrk_run(
                            server.base_url, path, bodies[name], connections=connections, seconds=seconds
                        )
                        drained(server)
                    assert done.non_2xx == 0 and done.socket_errors == 0, done
                    figures = (done.requests_per_second, done.p50_us / 1000, done.p99_us / 1000)
                    results.setdefault((name, connections, mode), []).append(figures)
                    print(
                        name,
                        connections,
                        mode,
                        "req/s {:.0f} p50 {:.1f} ms p99 {:.1f} ms".format(*figures),
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    print("\nmedians over", args.rounds, "rounds:")
    print("| model | connections | batching | req/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, connections, mode), runs in results.items():
        rps, p50, p99 = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"| {name} | {connections} | {mode} | {rps:.0f} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
