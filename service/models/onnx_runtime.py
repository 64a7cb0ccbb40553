"""The compiled runtime: a model's ONNX artifact, run by onnxruntime, behind ``LoadedModel.predict``.

``SERVICE_RUNTIME`` chooses: ``auto`` serves a model with onnxruntime when its
manifest names a verified ONNX artifact, and with scikit-learn otherwise;
``sklearn`` ignores every ONNX artifact (the file is not even read); ``onnx``
serves compiled models only, and a model without a verified artifact is not
ready (an operator who asks for ONNX everywhere learns which models lack it,
rather than silently serving them slower).

The artifact is read and its SHA-256 checked against the manifest when the
model loads, like the pickle's; a mismatch refuses the model, as a tampered
pickle does (``SERVICE_RUNTIME=sklearn`` serves it from the pickle alone).

onnxruntime is imported, and its sessions made, only in the process that
predicts. Importing it starts a native thread, and the Gunicorn master must fork
with no thread but its own: a thread holding a lock at the fork would leave
that lock held forever in every worker. The server holds sessions back in the
master (``hold_sessions_until_fork``), so the master's warm-up runs on
scikit-learn, and each worker starts its own sessions after the fork
(``start_sessions``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.errors import ArtifactHashMismatch, ArtifactMissing, ModelLoadError
from service.models.manifest import Manifest
from service.models.onnx_artifact import OnnxArtifact
from service.models.store_files import Refused, read_regular

log = logging.getLogger(__name__)

_INPUT_DTYPES = {"double": np.float64, "float": np.float32}

_held = False


def hold_sessions_until_fork() -> None:
    """Make no onnxruntime session in this process (a forking server's master) until released."""
    global _held
    _held = True


def release_sessions() -> None:
    """This process predicts now (a forked worker): compiled models may start their sessions."""
    global _held
    _held = False


class OnnxRuntime:
    """One compiled model's onnxruntime session, made on first use in the process that predicts."""

    def __init__(self, data: bytes, artifact: OnnxArtifact, manifest: Manifest, threads: int = 1) -> None:
        self.artifact = artifact
        self._data = data
        self._threads = threads
        self._dtype = _INPUT_DTYPES[artifact.input_type or "double"]
        self._complete_rows_only = artifact.missing_values == "sklearn"
        # For one tensor per feature: (name, category or not), in manifest order.
        self._columns = (
            [(feature.name, feature.type == "category") for feature in manifest.features]
            if artifact.inputs == "columns"
            else None
        )
        self._session: Any = None
        self._lock = threading.Lock()
        # Why the session could not be made in this process: the model is then served by scikit-learn.
        self.failed: str | None = None

    def run(self, matrix: np.ndarray) -> list[np.ndarray] | None:
        """The graph's outputs for ``matrix``; None when the estimator is to answer instead.

        That is: in a process that does not run ONNX (see above), or for rows
        with a missing value when the compiled model does not answer them as
        the estimator does (see ``OnnxArtifact.missing_values``).
        """
        session = self.session()
        if session is None or (self._complete_rows_only and missing_rows(matrix).any()):
            return None
        if self._columns is None:
            # A float artifact takes what scikit-learn's trees take: the float64 matrix cast to float32.
            return session.run(None, {self._input: np.ascontiguousarray(matrix, dtype=self._dtype)})
        if hasattr(matrix, "to_numpy"):  # a DataFrame: its columns in manifest order
            matrix = matrix[[name for name, _ in self._columns]].to_numpy(dtype=object)
        feed = {}
        for index, (name, category) in enumerate(self._columns):
            column = matrix[:, index : index + 1]
            # Numbers (booleans as 0 or 1) in the artifact's type; categories as strings.
            feed[name] = column.astype(object) if category else column.astype(self._dtype)
        return session.run(None, feed)

    def session(self) -> Any:
        if self._session is None and not _held and self.failed is None:
            with self._lock:
                if self._session is None and self.failed is None:
                    self._start()
        return self._session

    def _start(self) -> None:
        try:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            # Like BLAS, one worker's share of the cores (SERVICE_MODEL_THREADS);
            # workers, not threads, give parallelism.
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            # Idle pool threads would spin on cores other workers need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3  # errors only: its warnings are not the operator's to act on
            session = onnxruntime.InferenceSession(self._data, options, providers=["CPUExecutionProvider"])
            self._input = session.get_inputs()[0].name
            self._session = session
        except Exception as error:
            self.failed = f"its ONNX artifact could not be started, so scikit-learn serves it: {error}"


def missing_rows(matrix: Any) -> np.ndarray:
    """Which rows of a validated matrix hold a missing value (NaN, or None in an object matrix)."""
    if isinstance(matrix, np.ndarray) and matrix.dtype.kind == "f":
        return np.isnan(matrix).any(axis=1)
    return np.asarray(pd.isna(matrix)).any(axis=1)


def start_sessions(models: list[Any]) -> None:
    """Start every compiled model's session now (in a worker, after the fork) rather than on first request."""
    release_sessions()
    for model in models:
        if model.compiled is not None and model.compiled.session() is None:
            log.error("model %s version %s: %s", model.name, model.version, model.compiled.failed)


def read_compiled(root: Path, manifest: Manifest, runtime: str, threads: int) -> OnnxRuntime | None:
    """The model's compiled runtime under ``SERVICE_RUNTIME=runtime``, or None to serve it with scikit-learn.

    Raises ``ModelLoadError`` for a missing or tampered artifact, and under
    ``onnx`` for a model that has no verified one.
    """
    name, version, artifact = manifest.name, manifest.version, manifest.onnx
    if runtime == "sklearn":
        return None
    if artifact is None or not artifact.verified:
        if runtime == "onnx":
            why = (
                "it has not been compiled ('flask --app wsgi models compile NAME')"
                if artifact is None
                else f"its ONNX conversion was refused: {artifact.reason}"
            )
            raise ModelLoadError(
                name, version, f"SERVICE_RUNTIME=onnx serves compiled models only, and {why}"
            )
        return None
    shown = f"{name}/{version}/{artifact.file}"
    try:
        data = read_regular(root, root / name / version / str(artifact.file))
    except Refused as refused:
        raise ArtifactMissing(name, version, f"ONNX artifact {shown} {refused}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        raise ArtifactHashMismatch(
            name,
            version,
            f"ONNX artifact {shown} has SHA-256 {digest}, manifest says {artifact.sha256}; refusing to "
            "serve it (SERVICE_RUNTIME=sklearn serves the model from its pickle alone)",
        )
    return OnnxRuntime(data, artifact, manifest, threads)
