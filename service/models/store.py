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
import os
import platform
import re
import shutil
import stat
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import numpy
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
    MAX_MANIFEST_BYTES,
    NAME_PATTERN,
    Manifest,
    ManifestLimitExceeded,
    decode_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

# A reason ends up in /ready answers, /v1/models and log lines: a sentence, not a
# dump. Longer ones (a schema error naming 100,000 bad entries, the message of an
# exception raised inside a pickle) are cut to this many characters.
MAX_REASON_CHARS = 1_000

# Links are followed only while they stay in the store: a manifest linked to a
# file elsewhere would have its keys quoted in /ready, an artifact elsewhere is
# outside what the operator manages as the store.
_LEAVES_STORE = "leads outside the model store (symbolic links are followed only within it)"


def bounded(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """``reason`` cut to at most ``limit`` characters, saying how many were cut."""
    if len(reason) <= limit:
        return reason
    keep = limit - len(f"... ({len(reason)} more characters)")
    return f"{reason[:keep]}... ({len(reason) - keep} more characters)"


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


class _Refused(Exception):
    """A stored file that is not read; the message follows the file's name ("is missing")."""


class ModelStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def names(self) -> list[str]:
        """Names with at least one stored version, or whose versions cannot be listed.

        A directory that cannot be listed is named, not hidden: loading it says why.
        """
        try:
            candidates = _directories(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            log.warning("cannot list the model store %s: %s", self.root, error.strerror)
            return []
        found = []
        for name in candidates:
            try:
                if _directories(self.root / name):
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
            return sorted(_directories(self.root / name), key=version_key)
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
            manifest = decode_manifest(self._read(directory / MANIFEST_FILE, limit=MAX_MANIFEST_BYTES))
        except (_Refused, ManifestLimitExceeded) as error:
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
            data = self._read(path)
        except _Refused as refused:
            raise ArtifactMissing(name, version, f"artifact {shown} {refused}") from None
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
                    name, version, bounded(f"artifact {shown} cannot be unpickled: {error}")
                ) from error
        notes = mismatches + [str(w.message) for w in caught]
        for note in notes:
            log.warning("model %s version %s: %s", name, version, note)

        _check_estimator(manifest, estimator)
        return LoadedModel(manifest=manifest, estimator=estimator, warnings=tuple(notes))

    def _inside(self, path: Path) -> bool:
        """Whether ``path``, every link resolved, is in the store (itself resolved)."""
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.root))

    def _version_directory(self, name: str, version: str) -> Path:
        """``ROOT/NAME/VERSION``; raises ``ManifestError`` if a link takes it out of the store."""
        directory = self.root / name / version
        for path, shown in (
            (directory.parent, f"model directory {name}/"),
            (directory, f"version directory {name}/{version}/"),
        ):
            if not self._inside(path):
                raise ManifestError(name, version, f"{shown} {_LEAVES_STORE}")
        return directory

    def _read(self, path: Path, limit: int | None = None) -> bytes:
        """The bytes of a regular file in the store: all of them, or at most ``limit`` + 1.

        Raises ``_Refused``. A FIFO would block the open (and the start-up) until
        someone writes to it, and a device may never end: anything but a regular
        file is refused after a ``stat``, without being opened. The open itself
        does not block, and the opened file is checked again, in case it was
        swapped in between.
        """
        real = Path(os.path.realpath(path))
        if not self._inside(real):
            raise _Refused(_LEAVES_STORE)
        try:
            _check_regular(os.stat(real).st_mode)
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                _check_regular(os.fstat(fd).st_mode)
                with open(fd, "rb", closefd=False) as handle:
                    return handle.read() if limit is None else handle.read(limit + 1)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise _Refused("is missing") from None
        except OSError as error:
            raise _Refused(f"cannot be read: {error.strerror}") from None

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


def _directories(directory: Path) -> list[str]:
    """Entries of ``directory`` with a valid name that are directories, through links.

    An entry that cannot be examined (a link to itself, a target out of reach)
    counts: loading it says why it fails, rather than it silently not existing.
    Raises ``OSError`` if ``directory`` cannot be listed.
    """
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not NAME_PATTERN.fullmatch(entry.name):
                continue
            try:
                is_directory = entry.is_dir()
            except OSError:
                is_directory = True
            if is_directory:
                found.append(entry.name)
    return found


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "of another kind")
        raise _Refused(f"is not a regular file ({kind})")


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
