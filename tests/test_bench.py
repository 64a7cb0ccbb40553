"""A smoke run of the benchmark harness: ``python -m bench.run --quick`` end to end.

It trains the demo models into a fresh store, starts the service and both
baselines under Gunicorn, drives them with wrk and writes the report; here only
the harness is judged (every server answered, nothing failed), not the figures.
The model threads section is too long for a test; its model and its thread
counting are checked on their own.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bodies import dataset_rows
from bench.measure import threads_used
from bench.mlp import NAME, ensure_mlp
from bench.results import WorkerThreads
from bench.store import load
from service.models.store import ModelStore
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 300  # a quick run takes well under a minute; this only stops a hung one
QUICK_SCENARIOS = ("iris single @8", "iris batch 1000 @1")


def table_rows(report: str) -> dict[str, list[str]]:
    """The throughput table's rows by scenario label, cells stripped."""
    section = report.split("## Throughput and latency", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| Scenario"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_quick_benchmark_reports_every_server(tmp_path: Path) -> None:
    # CI installs wrk (make ci-deps -> bench-deps): a missing one is a broken set-up, not a skip.
    assert shutil.which("wrk"), "wrk is not installed: run make bench-deps"
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--store", str(tmp_path / "store")],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the runner then stops its servers on the way out.
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"bench.run --quick still running after {RUN_TIMEOUT}s:\n{stderr[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{stderr[-3000:]}\n{stdout[-3000:]}"

    latest = out / "latest.md"
    assert latest.is_file()
    assert len(list(out.glob("*Z.md"))) == 1  # the timestamped copy
    report = latest.read_text(encoding="utf-8")
    assert stdout == report

    rows = table_rows(report)
    assert set(rows) == set(QUICK_SCENARIOS)
    for label, cells in rows.items():
        requests_per_second = [float(value) for value in cells[1].split(" / ")]
        assert len(requests_per_second) == 3, (label, cells)  # service / bare / naive
        assert all(value > 0 for value in requests_per_second), (label, cells)
        assert cells[6] == "0 / 0 / 0", (label, cells)  # non-2xx answers and socket errors
        assert cells[-1] == "ok", (label, cells)
    assert "FAIL" not in report.split("## Goals", 1)[0]
    assert "## Problems" not in report  # includes the check that all three answer alike


def test_the_threads_model_is_trained_once_and_passes_the_services_checks(tmp_path: Path) -> None:
    assert ensure_mlp(tmp_path)
    assert not ensure_mlp(tmp_path)  # already there: kept, not retrained
    # The service's own loader: manifest, SHA-256 of the artifact, estimator against manifest.
    served = ModelStore(tmp_path).load(NAME, "1")
    rows = dataset_rows(NAME, load(NAME, tmp_path).manifest)
    assert served.estimator.predict_proba(rows[:1000]).shape == (min(len(rows), 1000), 2)


def test_threads_that_ran_are_those_whose_cpu_time_grew() -> None:
    before = {7: (3, {7: 5, 8: 2, 9: 0})}
    after = {7: (4, {7: 6, 8: 2, 9: 0, 10: 1}), 20: (2, {20: 0, 21: 3})}  # 10 and worker 20 are new
    assert threads_used(before, after) == [WorkerThreads(4, 2), WorkerThreads(2, 1)]


def test_versus_compares_two_checkouts_scenario_by_scenario(demo_store_path: Path) -> None:
    """This checkout against itself, one short round: every scenario measured on both."""
    flags = ["--runs", "1", "--duration", "1", "--warmup", "0", "--store", str(demo_store_path)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.versus", "--repo", str(REPO_ROOT), *flags],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split("|")[1].strip(): line for line in run.stdout.splitlines() if " @" in line}
    assert sorted(rows) == sorted(
        f"{model} {kind} @{connections}"
        for model in ("iris", "breast_cancer")
        for kind, conns in (("single", (1, 8, 64)), ("batch 1000", (1, 4)))
        for connections in conns
    )
    for line in rows.values():
        this, other, ratio = (cell.strip() for cell in line.split("|")[2:5])
        assert float(this) > 0 and float(other) > 0
        assert ratio.endswith("x") and float(ratio[:-1]) > 0
