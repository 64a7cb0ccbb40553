"""The model store: ``ROOT/NAME/VERSION/`` directories of artifacts and manifests.

A pickle runs code when it is loaded, so an artifact is unpickled only from the
very bytes whose SHA-256 matched its manifest: the file is read once, hashed, and
those bytes are what joblib loads (no window to swap the file in between).

Every model is loaded at start-up, so nothing in one model's directory may stop
or hang that: files are opened without blocking and read only if they are
regular files, manifests are bounded (see ``manifest.py``), and symbolic links
are followed only while they stay inside the store. Each refusal is a
``ModelLoadError`` naming the file, and that model is not ready.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import skops.io as skops_io
from marshmallow import ValidationError

from service.errors import (
    ArtifactHashMismatch,
    ArtifactMissing,
    IncompatibleVersion,
    ManifestError,
    ModelLoadError,
)
from service.models.loaded import LoadedModel
from service.models.manifest import (
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    MULTI_OUTPUT_TASKS,
    NAME_PATTERN,
    Artifact,
    Manifest,
    ManifestLimitExceeded,
    decode_manifest,
    write_manifest,
)
from service.models.onnx_runtime import read_compiled
from service.models.shapes import declared_outputs, plain
from service.models.store_files import LEAVES_STORE, Refused, inside, read_regular, subdirectories
from service.models.versions import version_key, version_mismatches

log = logging.getLogger(__name__)

# A reason ends up in /ready answers, /v1/models and log lines: a sentence, not a
# dump. Longer ones (a schema error naming 100,000 bad entries, the message of an
# exception raised inside a pickle) are cut to this many characters.
MAX_REASON_CHARS = 1_000


def bounded(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to at most ``limit`` characters, saying how many were cut."""
    if len(reason) <= limit:
        return reason
    keep = limit - len(f"... ({len(reason)} more characters)")
    return f"{reason[:keep]}... ({len(reason) - keep} more characters)"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    """``allow_pickle`` False (``SERVICE_ALLOW_PICKLE=false``): only .skops artifacts are loaded."""

    def __init__(self, root: Path | str, *, allow_pickle: bool = True) -> None:
        self.root = Path(root)
        self.allow_pickle = allow_pickle

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def names(self) -> list[str]:
        """Names with at least one stored version, or whose versions cannot be listed.

        A directory that cannot be listed is named, not hidden: loading it says why.
        """
        try:
            candidates = subdirectories(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            log.warning("cannot list the model store %s: %s", self.root, error.strerror)
            return []
        found = []
        for name in candidates:
            try:
                if subdirectories(self.root / name):
                    found.append(name)
            except OSError:
                found.append(name)
        return sorted(found)

    def versions(self, name: str) -> list[str]:
        """Stored versions of ``name``, lowest first; none if its directory cannot be listed."""
        try:
            return self._listed_versions(name)
        except OSError:
            return []

    def _listed_versions(self, name: str) -> list[str]:
        """``versions``, but raising ``OSError`` when the model's directory cannot be listed."""
        if not NAME_PATTERN.fullmatch(name):
            return []
        try:
            return sorted(subdirectories(self.root / name), key=version_key)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def resolve(self, name: str, pinned: str | None = None) -> str:
        """The version to serve: ``pinned`` if given, else the highest stored one."""
        try:
            versions = self._listed_versions(name)
        except OSError as error:
            raise ArtifactMissing(
                name, None, f"model directory {name}/ cannot be listed: {error.strerror}"
            ) from None
        if not versions:
            raise ArtifactMissing(name, None, f"the store has no versions of it under {name}/")
        if pinned is None:
            return versions[-1]
        if pinned not in versions:
            raise ArtifactMissing(
                name, pinned, f"pinned version is not in the store (stored: {', '.join(versions)})"
            )
        return pinned

    def next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)

    def manifest(self, name: str, version: str) -> Manifest:
        directory = self._version_directory(name, version)
        shown = f"{name}/{version}/{MANIFEST_FILE}"  # store-relative: no host paths in answers
        try:
            data = read_regular(self.root, directory / MANIFEST_FILE, limit=MAX_MANIFEST_BYTES)
            manifest = decode_manifest(data)
        except (Refused, ManifestLimitExceeded) as error:
            raise ManifestError(name, version, f"manifest {shown} {error}") from None
        except ValueError as error:
            raise ManifestError(name, version, f"manifest {shown} is not valid JSON: {error}") from None
        except ValidationError as error:
            raise ManifestError(
                name, version, bounded(f"manifest {shown} is malformed: {json.dumps(error.messages)}")
            ) from None
        if (manifest.name, manifest.version) != (name, version):
            raise ManifestError(
                name,
                version,
                f"manifest {shown} describes {manifest.name!r} version {manifest.version}",
            )
        return manifest

    def load(
        self,
        name: str,
        version: str,
        *,
        strict_versions: bool = False,
        range_policy: str = "flag",
        runtime: str = "auto",
        model_threads: int = 1,
    ) -> LoadedModel:
        """Verify, unpickle and check one model version; raises ``ModelLoadError``.

        ``runtime`` (``SERVICE_RUNTIME``) says whether its compiled artifact, if
        any, predicts in its place: see ``onnx_runtime.py``.
        """
        manifest = self.manifest(name, version)
        mismatches = version_mismatches(manifest.trained_with)
        if mismatches and strict_versions:
            raise IncompatibleVersion(
                name, version, "; ".join(mismatches) + " (strict version checking is on)"
            )

        path = self.root / name / version / manifest.artifact.file
        shown = f"{name}/{version}/{manifest.artifact.file}"
        try:
            data = read_regular(self.root, path)
        except Refused as refused:
            raise ArtifactMissing(name, version, f"artifact {shown} {refused}") from None
        digest = sha256_of(data)
        if digest != manifest.artifact.sha256:
            raise ArtifactHashMismatch(
                name,
                version,
                f"artifact {shown} has SHA-256 {digest}, manifest says "
                f"{manifest.artifact.sha256}; refusing to unpickle it",
            )

        if not manifest.artifact.is_skops and not self.allow_pickle:
            raise ModelLoadError(
                name,
                version,
                f"artifact {shown} is a pickle, and pickles are not loaded (SERVICE_ALLOW_PICKLE=false); "
                "store it as skops: flask --app wsgi models add PATH --format skops",
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                estimator = _deserialised(data, manifest.artifact)
            except Exception as error:
                verb = "loaded" if manifest.artifact.is_skops else "unpickled"
                raise ModelLoadError(
                    name, version, bounded(f"artifact {shown} cannot be {verb}: {error}")
                ) from error
        notes = mismatches + [str(w.message) for w in caught]
        for note in notes:
            log.warning("model %s version %s: %s", name, version, note)

        _check_estimator(manifest, estimator)
        compiled = read_compiled(self.root, manifest, runtime, model_threads)
        return LoadedModel(
            manifest=manifest,
            estimator=estimator,
            warnings=tuple(notes),
            range_policy=range_policy,
            compiled=compiled,
        )

    def _version_directory(self, name: str, version: str) -> Path:
        """``ROOT/NAME/VERSION``; raises ``ManifestError`` if a link takes it out of the store."""
        directory = self.root / name / version
        for path, shown in (
            (directory.parent, f"model directory {name}/"),
            (directory, f"version directory {name}/{version}/"),
        ):
            if not inside(self.root, path):
                raise ManifestError(name, version, f"{shown} {LEAVES_STORE}")
        return directory

    def add(self, artifact: Path, manifest: Manifest) -> Path:
        """Copy ``artifact`` in as ``manifest.name``/``manifest.version``; returns its directory.

        The version directory appears at once, complete, or not at all.
        """
        target = self.root / manifest.name / manifest.version
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}-", dir=target.parent))
        try:
            data = artifact.read_bytes()
            (staging / manifest.artifact.file).write_bytes(data)
            final = _with_sha256(manifest, sha256_of(data))
            write_manifest(final, staging / MANIFEST_FILE)
            staging.chmod(0o755)  # mkdtemp makes it private to its creator
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def remove(self, name: str, version: str) -> None:
        """Delete one stored version, and the model's directory if it was the last."""
        directory = self.root / name / version
        shutil.rmtree(directory)
        if not any(directory.parent.iterdir()):
            directory.parent.rmdir()


def _deserialised(data: bytes, artifact: Artifact) -> Any:
    """The estimator in ``data``: a .skops artifact through skops, with only the types it
    trusts and those its manifest names (nothing else runs); a pickle through joblib."""
    if artifact.is_skops:
        return skops_io.loads(data, trusted=list(artifact.trusted))
    return joblib.load(io.BytesIO(data))


def _with_sha256(manifest: Manifest, digest: str) -> Manifest:
    return replace(manifest, artifact=replace(manifest.artifact, sha256=digest))


def _check_estimator(manifest: Manifest, estimator: Any) -> None:
    """Refuse an artifact that does not match what its manifest promises."""
    name, version = manifest.name, manifest.version
    if not hasattr(estimator, "predict"):
        raise ManifestError(
            name, version, f"artifact holds a {type(estimator).__name__}, which has no predict()"
        )
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is not None and list(names_in) != list(manifest.feature_names):
        raise ManifestError(
            name,
            version,
            f"the model was fitted on features {list(names_in)}, "
            f"the manifest lists {list(manifest.feature_names)}",
        )
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is not None and n_in != len(manifest.features):
        raise ManifestError(
            name, version, f"the model expects {n_in} features, the manifest lists {len(manifest.features)}"
        )
    if manifest.task == "classification":
        classes = getattr(estimator, "classes_", [])
        # A multi-output classifier has a list of label arrays, one per target.
        fitted: list[Any] = (
            [[plain(label) for label in labels] for labels in classes]
            if isinstance(classes, list)
            else [plain(label) for label in classes]
        )
        listed = list(manifest.classes or ())
        if manifest.targets is not None:
            listed = [list(labels) for labels in listed]
        if fitted != listed:
            raise ManifestError(
                name, version, f"the model's classes are {fitted}, the manifest lists {listed}"
            )
    declared = declared_outputs(estimator)
    if manifest.task in MULTI_OUTPUT_TASKS and declared is not None and declared != manifest.outputs:
        raise ManifestError(
            name,
            version,
            f"the model predicts {declared} output(s) per row, the manifest names {manifest.outputs} "
            "(a model with several outputs names each in targets)",
        )
    for method in ("decision_function",) if manifest.task == "outlier_detection" else ():
        if not hasattr(estimator, method):
            raise ManifestError(
                name, version, f"artifact holds a {type(estimator).__name__}, which has no {method}()"
            )
