"""The model store: ``ROOT/NAME/VERSION/`` directories of artifacts and manifests.

A pickle runs code when it is loaded, so an artifact is unpickled only from the
very bytes whose SHA-256 matched its manifest: the file is read once, hashed, and
those bytes are what joblib loads (no window to swap the file in between).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import re
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import sklearn
from marshmallow import ValidationError
from packaging.version import InvalidVersion, Version

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
    NAME_PATTERN,
    Manifest,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions: PEP 440 ones (1, 2, 10, 1.2.0) numerically, above any other label."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        parts = re.findall(r"\d+|\D+", version)
        return (0, tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def runtime_versions() -> dict[str, str]:
    """Library versions of this process, recorded in manifests at training time."""
    import numpy

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }


def version_mismatches(trained_with: dict[str, str]) -> list[str]:
    """Human-readable differences between the training and serving runtimes."""
    here = runtime_versions()
    problems = []
    trained_sklearn = trained_with.get("sklearn")
    if trained_sklearn != here["sklearn"]:
        problems.append(f"trained with scikit-learn {trained_sklearn}, serving with {here['sklearn']}")
    trained_python = trained_with.get("python")
    if trained_python and trained_python.split(".")[:2] != here["python"].split(".")[:2]:
        problems.append(f"trained with Python {trained_python}, serving with {here['python']}")
    return problems


class ModelStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def names(self) -> list[str]:
        """Names with at least one stored version."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and NAME_PATTERN.match(entry.name) and self.versions(entry.name)
        )

    def versions(self, name: str) -> list[str]:
        """Stored versions of ``name``, lowest first."""
        directory = self.root / name
        if not NAME_PATTERN.match(name) or not directory.is_dir():
            return []
        found = [
            entry.name for entry in directory.iterdir() if entry.is_dir() and NAME_PATTERN.match(entry.name)
        ]
        return sorted(found, key=version_key)

    def resolve(self, name: str, pinned: str | None = None) -> str:
        """The version to serve: ``pinned`` if given, else the highest stored one."""
        versions = self.versions(name)
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
        path = self.root / name / version / MANIFEST_FILE
        shown = f"{name}/{version}/{MANIFEST_FILE}"  # store-relative: no host paths in answers
        try:
            manifest = read_manifest(path)
        except FileNotFoundError:
            raise ManifestError(name, version, f"manifest {shown} is missing") from None
        except OSError as error:
            raise ManifestError(name, version, f"manifest {shown} cannot be read: {error.strerror}") from None
        except ValueError as error:
            raise ManifestError(name, version, f"manifest {shown} is not valid JSON: {error}") from None
        except ValidationError as error:
            raise ManifestError(
                name, version, f"manifest {shown} is malformed: {json.dumps(error.messages)}"
            ) from None
        if (manifest.name, manifest.version) != (name, version):
            raise ManifestError(
                name,
                version,
                f"manifest {shown} describes {manifest.name!r} version {manifest.version}",
            )
        return manifest

    def load(self, name: str, version: str, *, strict_versions: bool = False) -> LoadedModel:
        """Verify, unpickle and check one model version; raises ``ModelLoadError``."""
        manifest = self.manifest(name, version)
        mismatches = version_mismatches(manifest.trained_with)
        if mismatches and strict_versions:
            raise IncompatibleVersion(
                name, version, "; ".join(mismatches) + " (strict version checking is on)"
            )

        path = self.root / name / version / manifest.artifact.file
        shown = f"{name}/{version}/{manifest.artifact.file}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(name, version, f"artifact {shown} is missing") from None
        except OSError as error:
            raise ArtifactMissing(
                name, version, f"artifact {shown} cannot be read: {error.strerror}"
            ) from None
        digest = sha256_of(data)
        if digest != manifest.artifact.sha256:
            raise ArtifactHashMismatch(
                name,
                version,
                f"artifact {shown} has SHA-256 {digest}, manifest says "
                f"{manifest.artifact.sha256}; refusing to unpickle it",
            )

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                estimator = joblib.load(io.BytesIO(data))
            except Exception as error:
                raise ModelLoadError(
                    name, version, f"artifact {shown} cannot be unpickled: {error}"
                ) from error
        notes = mismatches + [str(w.message) for w in caught]
        for note in notes:
            log.warning("model %s version %s: %s", name, version, note)

        _check_estimator(manifest, estimator)
        return LoadedModel(manifest=manifest, estimator=estimator, warnings=tuple(notes))

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
        fitted = [_plain(label) for label in getattr(estimator, "classes_", [])]
        if fitted != list(manifest.classes or ()):
            raise ManifestError(
                name,
                version,
                f"the model's classes are {fitted}, the manifest lists {list(manifest.classes or ())}",
            )


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, for comparison with JSON values."""
    return value.item() if hasattr(value, "item") else value
