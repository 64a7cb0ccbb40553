"""A smoke run of the benchmark harness: ``python -m bench.run --quick`` end to end.

It copies the demo models into the run's own store, compiles them to ONNX, starts
the service and its variants, the tutorial app and the bare app under Gunicorn,
drives them with wrk and writes the report; here only the harness is judged
(every contender answered alike and measured, every goal got a figure), not the
figures. The model threads section is too long for a test; its model and its
thread counting are checked on their own, and so are the pieces that read
answers and profiles.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import h2load, v2_wire
from bench.bodies import dataset_rows
from bench.checks import difference, normalise
from bench.measure import threads_used
from bench.mlp import NAME, ensure_mlp
from bench.profile import bucket, frames, own_function
from bench.results import WorkerThreads
from bench.store import load
from service.models.store import ModelStore
from tests.servers import REPO_ROOT

RUN_TIMEOUT = 480  # a quick run takes one to three minutes (compiling included); this only stops a hung one
OPEN_INFERENCE = ("service v2 json", "service v2 binary", "service grpc")
QUICK_ROWS = (
    {
        ("iris single @8", contender)
        for contender in ("service", "service batching off", "tutorial", "bare arrays", *OPEN_INFERENCE)
    }
    | {
        ("iris batch 1000 @1", contender)
        for contender in (
            "service",
            "service compact",
            "tutorial",
            "bare arrays",
            "flask arrays",
            "service onnx compact",
        )
    }
    | {("breast_cancer single @1", "service"), ("breast_cancer single @1", "service onnx")}
)
QUICK_GOALS = (
    "(1) iris single rows @8: service req/s ÷ tutorial",
    "(1) iris batch 1000 @1: compact answer rows/s ÷ bare arrays",
    "(1) iris batch 1000 @1: default answer rows/s ÷ bare arrays",
    "(2) iris single rows @8: batching on ÷ off, req/s",
    "(3) forest single rows @1: p50 scikit-learn ÷ ONNX (ONNX is lower)",
)


def run_bench(module: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE FLAGS`` from the repository, finished with exit status 0."""
    run = subprocess.run(
        [sys.executable, "-m", module, *flags],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def section_rows(report: str, title: str) -> list[list[str]]:
    """The table rows of one section of the report, cells stripped, the header left out."""
    section = report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.integration
def test_quick_benchmark_measures_every_contender(tmp_path: Path, demo_store_path: Path) -> None:
    # CI installs wrk and h2load (make ci-deps -> bench-deps): a missing one is a broken set-up, not a skip.
    assert shutil.which("wrk"), "wrk is not installed: run make bench-deps"
    assert shutil.which("h2load"), "h2load is not installed: run make bench-deps"
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--store", str(demo_store_path)],
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

    rows = {(cells[0], cells[1]): cells for cells in section_rows(report, "Throughput and latency")}
    assert set(rows) == QUICK_ROWS
    for key, cells in rows.items():
        assert float(cells[2]) > 0, (key, cells)  # req/s
        assert cells[7] == "0", (key, cells)  # non-2xx answers and socket errors
        assert cells[-1] == "ok", (key, cells)
    goals = {cells[0]: cells for cells in section_rows(report, "Goals")}
    for text in QUICK_GOALS:
        measured = goals[text][2]
        assert measured.endswith("x") and float(measured[:-1]) > 0, goals[text]
    # Every protocol of the same server measured, and each compared with v1 within the run.
    protocols = {(cells[0], cells[1]): cells for cells in section_rows(report, "Open Inference Protocol")}
    assert set(protocols) == {
        ("iris single @8", name) for name in ("v1 JSON", "V2 JSON", "V2 binary", "gRPC")
    }
    for key, cells in protocols.items():
        assert float(cells[2]) > 0 and float(cells[3]) > 0, (key, cells)  # req/s, CPU µs/req
        if key[1] != "v1 JSON":
            assert all(cell.endswith("x") and float(cell[:-1]) > 0 for cell in cells[4:]), (key, cells)
    assert "PASS" not in report.split("## Open Inference Protocol", 1)[1].split("\n## ", 1)[0]
    assert "## Problems" not in report  # includes the check that every contender answers alike
    # The demo store it was given is left as it was: the run compiled a copy.
    assert not list(demo_store_path.rglob("*.onnx"))


IRIS_KEYS = ["setosa", "versicolor", "virginica"]


def test_every_answer_shape_reads_as_the_same_labels_and_probabilities() -> None:
    default = {
        "model": "iris",
        "predictions": ["setosa", "virginica"],
        "probabilities": [
            {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0},
            {"setosa": 0.0, "versicolor": 0.2, "virginica": 0.8},
        ],
    }
    matrix = [[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]]
    compact = {"classes": IRIS_KEYS, "predictions": ["setosa", "virginica"], "probabilities": matrix}
    arrays = {"predictions": ["setosa", "virginica"], "probabilities": matrix}
    expected = normalise(default, IRIS_KEYS)
    for answer in (compact, arrays):
        assert difference(expected, normalise(answer, IRIS_KEYS), 1e-9) is None
    single = normalise({"prediction": "setosa", "probabilities": [0.9, 0.1, 0.0]}, IRIS_KEYS)
    assert single == (["setosa"], [{"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}])


def test_open_inference_answers_read_as_labels_and_probabilities() -> None:
    """The three ways the protocol answers one row, read into the bare app's shape for the check."""
    expected = {"predictions": ["setosa"], "probabilities": [[0.9, 0.1, 0.0]]}
    label = b"setosa"
    labels_raw = len(label).to_bytes(4, "little") + label
    probabilities_raw = np.array([0.9, 0.1, 0.0], dtype="<f8").tobytes()
    outputs = [
        {"name": "predict", "datatype": "BYTES", "shape": [1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [1, 3]},
    ]
    as_json = {"outputs": [{**outputs[0], "data": ["setosa"]}, {**outputs[1], "data": [0.9, 0.1, 0.0]}]}
    assert v2_wire.read_json(as_json) == expected
    head = json.dumps(
        {
            "outputs": [
                {**outputs[0], "parameters": {"binary_data_size": len(labels_raw)}},
                {**outputs[1], "parameters": {"binary_data_size": len(probabilities_raw)}},
            ]
        }
    ).encode()
    assert v2_wire.read_binary(len(head), head + labels_raw + probabilities_raw) == expected
    with pytest.raises(v2_wire.AnswerError):
        v2_wire.read_binary(len(head), head + labels_raw + probabilities_raw + b"\0")
    # gRPC's answers are read in the quick run only: this process holds tritonclient's messages,
    # registered under the same package name as the service's (see bench/v2_wire.py).


def test_open_inference_bodies_carry_the_row() -> None:
    row = np.array([5.1, 3.5, 1.4, 0.2])
    assert v2_wire.json_body(row)["inputs"][0] == {
        "name": "input",
        "shape": [1, 4],
        "datatype": "FP64",
        "data": [5.1, 3.5, 1.4, 0.2],
    }
    body, header = v2_wire.binary_body(row)
    assert len(body) == header + 32 and np.frombuffer(body[header:], dtype="<f8").tolist() == row.tolist()
    assert b'"binary_data_size":32' in body[:header] and b'"binary_data_output":true' in body[:header]


def test_h2load_log_gives_requests_latency_and_failures() -> None:
    # start (µs since the epoch), HTTP status (-1: failed stream), µs until the end of the response
    log = "".join(f"17000000{i:08d}\t200\t{1000 + i}\n" for i in range(98)) + "1\t503\t50\n2\t-1\t7\n"
    result = h2load.parse(log, seconds=2)
    assert (result.requests, result.non_2xx, result.socket_errors) == (99, 1, 1)
    assert result.requests_per_second == 49.5
    assert 1040 <= result.p50_us <= 1060 and result.p99_us >= 1090
    assert h2load.parse("", seconds=1).requests == 0


def test_a_different_label_or_probability_is_named() -> None:
    expected = normalise({"predictions": ["setosa"], "probabilities": [[0.9, 0.1, 0.0]]}, IRIS_KEYS)
    relabelled = normalise({"predictions": ["versicolor"], "probabilities": [[0.9, 0.1, 0.0]]}, IRIS_KEYS)
    assert "labels" in difference(expected, relabelled, 1e-9)
    shifted = normalise({"predictions": ["setosa"], "probabilities": [[0.9, 0.1, 2e-6]]}, IRIS_KEYS)
    assert "virginica" in difference(expected, shifted, 1e-9)
    assert difference(expected, shifted, 1e-5) is None  # within the ONNX parity tolerance


def test_a_profile_sample_goes_to_the_layer_that_spent_it() -> None:
    worker = "ThreadWorker.handle (gunicorn/workers/gthread.py:553)"
    view = worker + ";Flask.wsgi_app (flask/app.py:1);predict (service/api/predict.py:9)"
    # The access record written from the app wraps the whole request.
    access = worker + ";AccessLog.__call__ (service/access_log.py:20)"
    cases = {
        view + ";Request.args (werkzeug/wrappers/request.py:3) 4": "Flask and werkzeug",
        view + ";Schema.load (marshmallow/schema.py:7) 2": "service view and validation",
        view + ";loads (orjson/orjson.cpython-311-x86_64-linux-gnu.so) 3": "JSON in and out (orjson, json)",
        view + ";check_array (sklearn/utils/validation.py:5);asarray (numpy/_core/x.py:1) 1": (
            "scikit-learn input checks and config"
        ),
        view + ";ForestClassifier.predict_proba (sklearn/ensemble/_forest.py:9) 5": (
            "model compute (scikit-learn, joblib, scipy, onnxruntime)"
        ),
        worker + ";Logger.access (gunicorn/glogging.py:3);dumps (json/__init__.py:2) 6": (
            "logging (gunicorn glogging, logging, JSON log formatter)"
        ),
        access + ";_record (service/access_log.py:40);dumps (orjson/orjson.so) 2": (
            "logging (gunicorn glogging, logging, JSON log formatter)"
        ),
        access + ";Flask.wsgi_app (flask/app.py:1);Request.args (werkzeug/wrappers/request.py:3) 4": (
            "Flask and werkzeug"
        ),
        worker + " 7": "gunicorn HTTP and worker",
    }
    for line, expected in cases.items():
        stack, count = frames(line)
        assert bucket(stack) == expected, line
        assert count == int(line.rsplit(" ", 1)[1])
    stack, _ = frames(view + ";unicode_strip (libpython3.11.so.1.0) 1")
    assert own_function(stack) == "predict (service/api/predict.py)"


@pytest.mark.integration
def test_profile_summarises_a_worker_under_load(demo_store_path: Path) -> None:
    flags = ["--seconds", "2", "--scenario", "single", "--store", str(demo_store_path)]
    run = run_bench("bench.profile", *flags)
    assert run.stdout.startswith("## iris single @8")
    shares = [
        float(line.rsplit("|", 2)[1].strip().rstrip("%"))
        for line in run.stdout.split("Top ")[0].splitlines()
        if line.startswith("| ") and line.endswith("% |")
    ]
    assert shares and abs(sum(shares) - 100) < 1
    assert "service view and validation" in run.stdout


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


@pytest.mark.integration
def test_versus_compares_two_checkouts_scenario_by_scenario(demo_store_path: Path) -> None:
    """This checkout against itself, one short round: every scenario measured on both."""
    flags = ["--runs", "1", "--duration", "1", "--warmup", "0", "--store", str(demo_store_path)]
    run = run_bench("bench.versus", "--repo", str(REPO_ROOT), *flags)
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
