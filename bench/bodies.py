"""Request bodies from the datasets the models were trained on, and the scenarios that send them.

The rows come from ``sklearn.datasets`` (shipped with scikit-learn, no download),
drawn with a fixed seed, features in the manifest's order, and only rows inside
the manifest's ranges: the service refuses anything else, and the point is to
measure answers, not refusals. The single rows are also written as the Open
Inference Protocol's bodies (bench/v2_wire.py): V2 JSON, the binary tensor
extension's, and one gRPC message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets

from bench import v2_wire
from bench.store import MODELS

SEED = 20240601
SINGLE_BODIES = 64  # distinct single-row bodies wrk cycles through
BATCH_ROWS = 1000
BATCH_BODIES = 4
SINGLE_CONNECTIONS = (1, 8, 64)
BATCH_CONNECTIONS = (1, 4)

# The mlp (bench/mlp.py) is trained on breast_cancer with the same feature names.
DATASETS = {
    "iris": datasets.load_iris,
    "breast_cancer": datasets.load_breast_cancer,
    "mlp": datasets.load_breast_cancer,
}


class BodyError(RuntimeError):
    pass


@dataclass(frozen=True)
class V2Bodies:
    """The single rows as the Open Inference Protocol's bodies, first row first in each."""

    json: Path  # one V2 JSON body per line, for bench/post.lua
    binary: Path  # binary extension bodies back to back, for bench/post_binary.lua
    binary_size: int  # bytes of each: they are all the same size
    binary_header: int  # bytes of JSON at the start of each (Inference-Header-Content-Length)
    grpc: Path  # one length-prefixed ModelInferRequest, for h2load (it sends one file)


@dataclass(frozen=True)
class Scenario:
    model: str
    rows: int  # rows per request; 1 is a single-row request to /predict
    connections: int
    bodies: Path
    v2: V2Bodies | None = None  # the same rows over the Open Inference Protocol, if measured so

    @property
    def batch(self) -> bool:
        return self.rows > 1

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model}/predict" + ("/batch" if self.batch else "")

    @property
    def label(self) -> str:
        kind = f"batch {self.rows}" if self.batch else "single"
        return f"{self.model} {kind} @{self.connections}"


@dataclass(frozen=True)
class ModelBodies:
    model: str
    single: Path
    batch: Path
    single_rows: np.ndarray  # the rows of the single bodies, one per body
    batch_matrix: np.ndarray  # the rows of the first batch body
    v2: V2Bodies


def _service_name(column: str) -> str:
    """'sepal length (cm)' -> 'sepal_length', 'mean radius' -> 'mean_radius': the demo's names."""
    return re.sub(r"\s*\(.*?\)", "", column).strip().replace(" ", "_")


def dataset_rows(model: str, manifest: dict[str, Any]) -> np.ndarray:
    """The dataset's rows, columns in manifest order, inside every manifest range."""
    if model not in DATASETS:
        raise BodyError(f"no dataset for model {model!r}")
    bunch = DATASETS[model]()
    columns = {_service_name(name): index for index, name in enumerate(bunch.feature_names)}
    names = [feature["name"] for feature in manifest["features"]]
    missing = [name for name in names if name not in columns]
    if missing:
        raise BodyError(
            f"{model}: the manifest's features {missing} are not columns of the dataset "
            f"({sorted(columns)}); is this the demo model?"
        )
    matrix = np.asarray(bunch.data, dtype=np.float64)[:, [columns[name] for name in names]]
    inside = np.ones(len(matrix), dtype=bool)
    for column, feature in enumerate(manifest["features"]):
        if feature.get("min") is not None:
            inside &= matrix[:, column] >= feature["min"]
        if feature.get("max") is not None:
            inside &= matrix[:, column] <= feature["max"]
    if not inside.any():
        raise BodyError(f"{model}: no dataset row lies inside the manifest's ranges")
    return matrix[inside]


def write_bodies(model: str, manifest: dict[str, Any], directory: Path) -> ModelBodies:
    """One JSON body per line, for bench/post.lua: single rows and 1,000-row batches."""
    rows = dataset_rows(model, manifest)
    rng = np.random.default_rng(SEED)
    single_rows = rows[rng.choice(len(rows), size=min(SINGLE_BODIES, len(rows)), replace=False)]
    batches = [rows[rng.choice(len(rows), size=BATCH_ROWS, replace=True)] for _ in range(BATCH_BODIES)]
    single = directory / f"{model}-single.jsonl"
    batch = directory / f"{model}-batch.jsonl"
    single.write_text("".join(json.dumps({"features": row}) + "\n" for row in single_rows.tolist()))
    batch.write_text("".join(json.dumps({"instances": matrix.tolist()}) + "\n" for matrix in batches))
    v2 = write_v2_bodies(model, single_rows, directory)
    return ModelBodies(model, single, batch, single_rows, batches[0], v2)


def write_v2_bodies(model: str, single_rows: np.ndarray, directory: Path) -> V2Bodies:
    """The single rows over the Open Inference Protocol, in the order of the v1 bodies."""
    json_path = directory / f"{model}-single-v2.jsonl"
    json_path.write_text("".join(json.dumps(v2_wire.json_body(row)) + "\n" for row in single_rows))
    binary = [v2_wire.binary_body(row) for row in single_rows]
    # Same shape, same JSON header: a file of equal-size bodies that post_binary.lua cuts by size.
    sizes = {(len(body), header) for body, header in binary}
    if len(sizes) != 1:
        raise BodyError(f"{model}: binary bodies of different sizes {sorted(sizes)}")
    (binary_size, binary_header) = sizes.pop()
    binary_path = directory / f"{model}-single-v2.bin"
    binary_path.write_bytes(b"".join(body for body, _ in binary))
    # h2load posts one file to every request: the first row, as the other checks send first.
    grpc_path = directory / f"{model}-single.grpc"
    grpc_path.write_bytes(v2_wire.grpc_frame(v2_wire.grpc_request(model, single_rows[0])))
    return V2Bodies(json_path, binary_path, binary_size, binary_header, grpc_path)


def first_body(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline().rstrip(b"\n")


def build_scenarios(bodies: dict[str, Any], quick: bool) -> list[Scenario]:
    """The measured scenarios over both models' bodies; ``quick``: two iris ones, for a smoke run."""
    if quick:
        return [
            Scenario("iris", 1, 8, bodies["iris"].single),
            Scenario("iris", BATCH_ROWS, 1, bodies["iris"].batch),
        ]
    found = [Scenario(m, 1, c, bodies[m].single) for m in MODELS for c in SINGLE_CONNECTIONS]
    found += [Scenario(m, BATCH_ROWS, c, bodies[m].batch) for m in MODELS for c in BATCH_CONNECTIONS]
    return found
