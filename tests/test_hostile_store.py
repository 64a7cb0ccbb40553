"""A model store with hostile model directories: each bad model is reported, none stops the rest.

The store holds the demo models, two models reached through symbolic links that
stay inside the store, and one bad model per way a directory can go wrong:
manifests nested absurdly deep, too large or too numerous, files that are not
regular files, links that lead out of the store. Every bad model must be not
ready with a clear reason while the good ones serve: through the app factory,
the CLI, and the real Gunicorn server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from flask import Flask

from service.errors import ArtifactMissing, ManifestError
from service.models import ModelStore
from service.models.manifest import MAX_MANIFEST_BYTES, MAX_MANIFEST_DEPTH, MAX_MANIFEST_VALUES
from service.models.store import MAX_REASON_CHARS
from tests.helpers import edit_manifest, time_limit
from tests.servers import REPO_ROOT, http, post_json, running_server

SETOSA = [5.1, 3.5, 1.4, 0.2]
# Building an app over the hostile store reads every file once: seconds, unless
# something blocks, which must fail the test rather than hang the run.
LOAD_LIMIT = 60.0

# Each bad model, and a fragment of the reason it is not ready.
BAD_MODELS = {
    "deep": "depth limit",  # '[' nested 200,000 times
    "deep_dataset": "depth limit",  # valid JSON, but too deep to render back
    "huge": "size limit",
    "numerous": "value limit",
    "fifo_manifest": "not a regular file (a FIFO)",
    "dir_manifest": "not a regular file (a directory)",
    "zero_manifest": "outside the model store",  # a link to /dev/zero
    "fifo_artifact": "not a regular file (a FIFO)",
    "outside_artifact": "outside the model store",
    "outside_model": "outside the model store",
    "outside_version": "outside the model store",
}
# ``models list`` reads manifests only: these two are found out when loaded.
BAD_ARTIFACTS = ("fifo_artifact", "outside_artifact")
# The demo models, and two models whose files are links within the store.
GOOD_MODELS = ("aliased", "breast_cancer", "diabetes", "iris", "linked")
IRIS_LIKE = ("iris", "linked", "aliased")


def clone_iris(store: Path, name: str, into: Path | None = None) -> Path:
    """A copy of iris version 1 renamed ``name``, at ``into`` or ``store/name/1``; its directory."""
    directory = into or store / name / "1"
    shutil.copytree(store / "iris" / "1", directory)
    edit_manifest(directory, name=name)
    return directory


def nested_lists(levels: int) -> Any:
    """``[[...[0]...]]`` with ``levels`` lists."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def replace_with_fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


@pytest.fixture
def hostile_store(store_path: Path, tmp_path: Path) -> Iterator[Path]:
    """The demo store plus every kind of bad model directory (see BAD_MODELS)."""
    store = store_path
    outside = tmp_path / "outside"
    outside.mkdir()

    # Manifests that are too much for a parser.
    (clone_iris(store, "deep") / "model.json").write_text("[" * 200_000)
    edit_manifest(clone_iris(store, "deep_dataset"), dataset={"nested": nested_lists(300)})
    os.truncate(clone_iris(store, "huge") / "model.json", MAX_MANIFEST_BYTES + 1)  # sparse
    edit_manifest(clone_iris(store, "numerous"), dataset={"values": [0] * MAX_MANIFEST_VALUES})

    # Files that are not regular files.
    fifos = [
        replace_with_fifo(clone_iris(store, "fifo_manifest") / "model.json"),
        replace_with_fifo(clone_iris(store, "fifo_artifact") / "model.joblib"),
    ]
    directory_manifest = clone_iris(store, "dir_manifest") / "model.json"
    directory_manifest.unlink()
    directory_manifest.mkdir()

    # Symbolic links that lead out of the store: to a device, a file, directories.
    zero = clone_iris(store, "zero_manifest") / "model.json"
    zero.unlink()
    zero.symlink_to("/dev/zero")
    artifact = clone_iris(store, "outside_artifact") / "model.joblib"
    shutil.copy(artifact, outside / "model.joblib")  # the right bytes, in the wrong place
    artifact.unlink()
    artifact.symlink_to(outside / "model.joblib")
    clone_iris(store, "outside_model", into=outside / "outside_model" / "1")
    (store / "outside_model").symlink_to(outside / "outside_model")
    clone_iris(store, "outside_version", into=outside / "outside_version-1")
    (store / "outside_version").mkdir()
    (store / "outside_version" / "1").symlink_to(outside / "outside_version-1")

    # Symbolic links that stay inside the store (through a dot-directory, which
    # discovery ignores): a manifest (absolute link), an artifact (relative
    # link), a version directory.
    shared = store / ".shared"
    shared.mkdir()
    linked = clone_iris(store, "linked")
    (linked / "model.json").rename(shared / "linked.json")
    (linked / "model.json").symlink_to(shared / "linked.json")
    (linked / "model.joblib").unlink()
    (linked / "model.joblib").symlink_to(Path("..", "..", "iris", "1", "model.joblib"))
    clone_iris(store, "aliased", into=shared / "aliased-1")
    (store / "aliased").mkdir()
    (store / "aliased" / "1").symlink_to(Path("..", ".shared", "aliased-1"))

    yield store
    for fifo in fifos:
        fifo.unlink(missing_ok=True)


def build_app(make_app: Callable[..., Flask], store: Path) -> Flask:
    with time_limit(LOAD_LIMIT):
        return make_app(model_store=store)


def check_readiness(body: dict[str, Any]) -> None:
    """Every bad model not ready with its reason, every good one ready, nothing else listed."""
    assert sorted(body["models"]) == sorted([*BAD_MODELS, *GOOD_MODELS])
    for name, reason in BAD_MODELS.items():
        status = body["models"][name]
        assert status["ready"] is False, (name, status)
        assert reason in status["error"], (name, status["error"])
        assert len(status["error"]) <= MAX_REASON_CHARS
        assert f"{name} (" in body["detail"]
    for name in GOOD_MODELS:
        assert body["models"][name]["ready"] is True, (name, body["models"][name])


# --- Through the app factory ------------------------------------------------------------


def test_bad_models_are_not_ready_and_the_others_serve(
    make_app: Callable[..., Flask], hostile_store: Path, tmp_path: Path
) -> None:
    """/ready is 503 naming each bad model and why; the good ones predict; nothing answers 500."""
    client = build_app(make_app, hostile_store).test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503
    check_readiness(ready.get_json())
    assert str(tmp_path) not in ready.get_data(as_text=True)  # reasons name store paths only

    for name in IRIS_LIKE:
        answer = client.post(f"/v1/models/{name}/predict", json={"features": SETOSA})
        assert answer.status_code == 200, (name, answer.get_json())
        assert answer.get_json()["prediction"] == "setosa"
    diabetes = client.post(
        "/v1/models/diabetes/predict", json={"features": [50, 1, 25, 90, 180, 110, 50, 4, 4.6, 90]}
    )
    assert diabetes.status_code == 200
    for name in BAD_MODELS:
        assert client.post(f"/v1/models/{name}/predict", json={"features": SETOSA}).status_code == 503
        metadata = client.get(f"/v1/models/{name}")
        assert metadata.status_code == 200 and metadata.get_json()["ready"] is False
    listed = client.get("/v1/models")
    assert listed.status_code == 200
    assert {model["name"] for model in listed.get_json()["models"]} == {*BAD_MODELS, *GOOD_MODELS}


def test_a_manifest_at_the_depth_limit_serves_and_renders(
    make_app: Callable[..., Flask], store_path: Path
) -> None:
    """The root object is level 1 and its ``dataset`` level 2: lists fill the rest up to the limit."""
    deepest = clone_iris(store_path, "deepest")
    edit_manifest(deepest, dataset={"nested": nested_lists(MAX_MANIFEST_DEPTH - 2)})
    too_deep = clone_iris(store_path, "too_deep")
    edit_manifest(too_deep, dataset={"nested": nested_lists(MAX_MANIFEST_DEPTH - 1)})

    client = build_app(make_app, store_path).test_client()
    metadata = client.get("/v1/models/deepest")
    assert metadata.status_code == 200
    assert metadata.get_json()["dataset"]["nested"] == nested_lists(MAX_MANIFEST_DEPTH - 2)
    status = client.get("/ready").get_json()["models"]
    assert status["deepest"]["ready"] is True
    assert status["too_deep"]["ready"] is False
    assert f"nested deeper than {MAX_MANIFEST_DEPTH} levels" in status["too_deep"]["error"]


def test_a_manifest_at_the_size_limit_loads(store_path: Path) -> None:
    """Padded with whitespace to exactly the limit it loads; one byte more is refused unread."""
    path = store_path / "iris" / "1" / "model.json"
    text = path.read_bytes().rstrip()
    path.write_bytes(text + b" " * (MAX_MANIFEST_BYTES - len(text)))
    assert ModelStore(store_path).manifest("iris", "1").name == "iris"
    with path.open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(ManifestError, match=r"iris/1/model\.json is larger than .* \(the size limit\)"):
        ModelStore(store_path).manifest("iris", "1")


def test_a_manifest_over_the_value_limit_is_refused(store_path: Path) -> None:
    """Values are counted before the schema sees them: the schema's time and memory stay bounded."""
    directory = store_path / "iris" / "1"
    document = json.loads((directory / "model.json").read_text())
    document["dataset"] = {}
    room = MAX_MANIFEST_VALUES - count_values(document) - 1  # the list itself is one more value
    edit_manifest(directory, dataset={"values": [0] * room})
    assert ModelStore(store_path).manifest("iris", "1").dataset["values"] == [0] * room
    edit_manifest(directory, dataset={"values": [0] * (room + 1)})
    with pytest.raises(ManifestError, match=r"holds more than .* values \(the value limit\)"):
        ModelStore(store_path).manifest("iris", "1")


def count_values(document: Any) -> int:
    """Every JSON value in ``document``, containers included, keys not."""
    if isinstance(document, dict):
        return 1 + sum(count_values(value) for value in document.values())
    if isinstance(document, list):
        return 1 + sum(count_values(value) for value in document)
    return 1


def test_the_reason_for_a_malformed_manifest_is_bounded(store_path: Path) -> None:
    """50,000 bad metrics make a multi-megabyte error; the reason quotes its start and says so."""
    edit_manifest(store_path / "iris" / "1", metrics={f"m{i}": "high" for i in range(50_000)})
    with pytest.raises(ManifestError) as caught:
        ModelStore(store_path).manifest("iris", "1")
    reason = caught.value.reason
    assert len(reason) <= MAX_REASON_CHARS
    assert reason.startswith('manifest iris/1/model.json is malformed: {"metrics": {"m0": ')
    assert reason.endswith("more characters)")


def test_a_device_in_the_store_is_not_read(store_path: Path) -> None:
    """Character devices as manifest (a copy of /dev/zero) and artifact (/dev/null) are refused.

    /dev/null for the artifact, whose read has no size limit: should the check
    ever go, the test fails on a hash mismatch instead of reading forever.
    """
    devices = []
    for file, original in (("model.json", "/dev/zero"), ("model.joblib", "/dev/null")):
        target = clone_iris(store_path, f"device_{file.split('.')[1]}") / file
        target.unlink()
        try:
            os.mknod(target, stat.S_IFCHR | 0o644, os.stat(original).st_rdev)
        except PermissionError:
            pytest.skip("this machine does not let the tests make device nodes")
        devices.append(target)
    store = ModelStore(store_path)
    try:
        with time_limit(LOAD_LIMIT):
            with pytest.raises(
                ManifestError, match=r"device_json/1/model\.json is not a regular file \(a char"
            ):
                store.load("device_json", "1")
            with pytest.raises(ArtifactMissing, match=r"device_joblib/1/model\.joblib is not a regular file"):
                store.load("device_joblib", "1")
    finally:
        for device in devices:
            device.unlink()


def test_a_link_loop_is_reported_not_hidden(make_app: Callable[..., Flask], store_path: Path) -> None:
    """An entry that cannot even be examined (a link to itself) is a model that is not ready."""
    (store_path / "loop").symlink_to("loop")
    (store_path / "iris" / "9").symlink_to("9")
    status = build_app(make_app, store_path).test_client().get("/ready").get_json()["models"]
    assert status["loop"]["ready"] is False
    assert "loop/ cannot be listed" in status["loop"]["error"]
    # A version that cannot be examined is still a version: the highest, so iris
    # is not ready, as with any broken highest version (no silent fallback).
    assert status["iris"]["version"] == "9" and status["iris"]["ready"] is False
    assert "iris/9/model.json cannot be read" in status["iris"]["error"]
    assert status["diabetes"]["ready"] is True


class RaisesWhenInspected:
    """Has predict(), but reading ``feature_names_in_`` raises: not a failure the store foresees."""

    def predict(self, X: Any) -> list[str]:
        return ["setosa"] * len(X)

    @property
    def feature_names_in_(self) -> list[str]:
        raise RuntimeError("inspected at /srv/private/path")


def store_raising_model(store: Path) -> None:
    directory = clone_iris(store, "raising")
    joblib.dump(RaisesWhenInspected(), directory / "model.joblib")
    digest = hashlib.sha256((directory / "model.joblib").read_bytes()).hexdigest()
    edit_manifest(directory, artifact={"file": "model.joblib", "sha256": digest})


def test_any_error_while_loading_is_contained(
    make_app: Callable[..., Flask], store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception the store does not turn into a refusal still only fails its own model.

    The answers name its type; the message (which may hold paths) and the
    traceback are in the log.
    """
    store_raising_model(store_path)
    with caplog.at_level(logging.ERROR):
        client = build_app(make_app, store_path).test_client()
    status = client.get("/ready").get_json()["models"]
    assert status["raising"]["ready"] is False
    assert "loading failed unexpectedly (RuntimeError)" in status["raising"]["error"]
    assert "/srv/private/path" not in status["raising"]["error"]
    assert "inspected at /srv/private/path" in caplog.text and "Traceback" in caplog.text
    assert all(status[name]["ready"] for name in ("iris", "diabetes", "breast_cancer"))
    verify = invoke(client.application, "verify")
    assert verify.exit_code == 1
    assert "FAIL raising 1: RuntimeError: inspected at /srv/private/path" in verify.output.splitlines()


# --- Through the CLI -----------------------------------------------------------------------


def invoke(app: Flask, *args: str) -> Any:
    with time_limit(LOAD_LIMIT):
        return app.test_cli_runner().invoke(args=["models", *args])


def test_list_reports_each_bad_model_and_goes_on(make_app: Callable[..., Flask], hostile_store: Path) -> None:
    """Every version gets its line: the manifest's summary, or INVALID and why."""
    result = invoke(build_app(make_app, hostile_store), "list")
    assert result.exit_code == 0, result.output
    lines = {line[1:].split()[0]: line for line in result.output.splitlines()}
    assert sorted(lines) == sorted([*BAD_MODELS, *GOOD_MODELS])
    for name, reason in BAD_MODELS.items():
        if name not in BAD_ARTIFACTS:
            assert "INVALID: " in lines[name] and reason in lines[name], lines[name]
    for name in [*GOOD_MODELS, *BAD_ARTIFACTS]:
        assert "INVALID" not in lines[name], lines[name]
        assert "classification" in lines[name] or "regression" in lines[name], lines[name]


def test_verify_reports_each_bad_model_and_fails(make_app: Callable[..., Flask], hostile_store: Path) -> None:
    result = invoke(build_app(make_app, hostile_store), "verify")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for name, reason in BAD_MODELS.items():
        [line] = [line for line in lines if line.startswith(f"FAIL {name} 1: ")]
        assert reason in line, line
    for name in GOOD_MODELS:
        assert f"ok   {name} 1" in lines
    total = len(BAD_MODELS) + len(GOOD_MODELS)
    assert f"{len(BAD_MODELS)} of {total} model versions failed" in result.output


def test_an_unreadable_model_directory_is_reported(store_path: Path) -> None:
    """``models list`` by a user who cannot read one model's directory: that model is INVALID.

    Root reads any directory, so as root the command runs without the capabilities
    that allow it (``setpriv``), like any other user.
    """
    command = [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "models", "list"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: every directory is readable")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "FLASK_"))}
    env["SERVICE_MODEL_STORE"] = str(store_path)
    (store_path / "diabetes").chmod(0)
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        (store_path / "diabetes").chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line[1:].split()[0]: line for line in result.stdout.splitlines()}
    assert sorted(lines) == ["breast_cancer", "diabetes", "iris"]
    assert "INVALID: " in lines["diabetes"] and "diabetes/ cannot be listed" in lines["diabetes"]
    assert "INVALID" not in lines["iris"]


# --- The real server ---------------------------------------------------------------------


@pytest.mark.integration
def test_gunicorn_starts_on_a_hostile_store_and_serves_the_good_models(
    hostile_store: Path, tmp_path: Path
) -> None:
    """Gunicorn loads every model in its master: none of the bad ones may stop or hang it."""
    with running_server(hostile_store, tmp_path / "logs", ready_statuses=frozenset({503})) as server:
        ready = http("GET", server.url("/ready"))
        assert ready.status_code == 503
        check_readiness(ready.json())
        for name in IRIS_LIKE:
            answer = post_json(server, f"/v1/models/{name}/predict", {"features": SETOSA})
            assert answer.status_code == 200, (name, answer.text)
            assert answer.json()["prediction"] == "setosa"
        assert post_json(server, "/predict", {"features": SETOSA}).status_code == 200
        assert http("GET", server.url("/v1/models/deep_dataset")).status_code == 200
