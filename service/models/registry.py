"""The set of served models: one object, built once when the app is created.

Nothing changes it while the app runs (a newly added version is served after a
restart), so every request sees the same models from its start to its end; a
request looks its model up once and uses that one object throughout.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from service.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PredictionFailed,
)
from service.models.core import validated
from service.models.json_rows import JsonRows
from service.models.loaded import LoadedModel, Prediction
from service.models.store import ModelStore, bounded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One configured model: loaded and warmed up, or the reason it is not."""

    name: str
    version: str | None
    model: LoadedModel | None = None
    error: str | None = None
    load_seconds: float | None = None  # load, verification and warm-up

    @property
    def ready(self) -> bool:
        return self.model is not None


class ModelRegistry:
    def __init__(self, served: Iterable[ServedModel] = ()) -> None:
        self._served: Mapping[str, ServedModel] = {entry.name: entry for entry in served}

    def get(self, name: str) -> LoadedModel:
        """The model that answers for ``name``; raises ``ModelNotFound`` or ``ModelNotReady``."""
        entry = self._served.get(name)
        if entry is None:
            raise ModelNotFound(name)
        if entry.model is None:
            raise ModelNotReady(name, entry.error or "it failed to load")
        return entry.model

    def entries(self) -> list[ServedModel]:
        return sorted(self._served.values(), key=lambda entry: entry.name)

    def entry(self, name: str) -> ServedModel:
        entry = self._served.get(name)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def not_ready(self) -> list[ServedModel]:
        return [entry for entry in self.entries() if not entry.ready]


def warm_up(model: LoadedModel) -> Prediction:
    """Predict the manifest's example row through the same rules and call as a request."""
    return model.predict(validated(model.rules, JsonRows([model.manifest.example_row()], many=False)))


def load_served_model(
    store: ModelStore, name: str, pinned: str | None, *, strict_versions: bool, range_policy: str = "flag"
) -> ServedModel:
    """Load, check and warm up one model; a failure is logged and returned, not raised.

    Whatever a model's files make the loader raise, that model is not ready and
    the others still serve; only KeyboardInterrupt and SystemExit go through.
    """
    version = None
    started = time.perf_counter()
    try:
        version = store.resolve(name, pinned)
        model = store.load(name, version, strict_versions=strict_versions, range_policy=range_policy)
        try:
            warm_up(model)
        except InvalidInput as error:
            raise ModelLoadError(
                name, version, f"the manifest's example row is invalid: {json.dumps(error.errors)}"
            ) from error
        except PredictionFailed as error:
            raise ModelLoadError(name, version, f"warm-up prediction failed: {error.__cause__!r}") from error
    except ModelLoadError as error:
        reason = bounded(error.detail)
        log.error("not serving model: %s", reason)
        return ServedModel(name=name, version=version, error=reason)
    except Exception as error:
        # Not a refusal the store foresaw: a bug, or something a pickled object
        # does when it is inspected. The traceback goes to the log; the answers
        # name only its type, as they do for any 500.
        log.exception("not serving model %s version %s: unexpected error while loading", name, version)
        reason = f"loading failed unexpectedly ({type(error).__name__}); the server log has the traceback"
        return ServedModel(name=name, version=version, error=ModelLoadError(name, version, reason).detail)
    seconds = time.perf_counter() - started
    log.info("loaded model %s version %s in %.3fs", name, version, seconds)
    return ServedModel(name=name, version=version, model=model, load_seconds=seconds)


def load_registry(
    store: ModelStore,
    names: Iterable[str] = (),
    pins: Mapping[str, str] | None = None,
    *,
    strict_versions: bool = False,
    range_policy: str = "flag",
) -> ModelRegistry:
    """Load every configured model (all in the store when ``names`` is empty)."""
    pins = pins or {}
    names = list(names) or store.names()
    for stray in sorted(set(pins) - set(names)):
        log.warning("version pin for %s ignored: that model is not served", stray)
    # Loading runs in the Gunicorn master before it forks. A BLAS or OpenMP
    # thread pool started here would be inherited by the workers as dead
    # threads, and the first parallel call in a worker can then hang: keep
    # every native pool single-threaded until the workers exist.
    with threadpool_limits(limits=1):
        served = [
            load_served_model(
                store, name, pins.get(name), strict_versions=strict_versions, range_policy=range_policy
            )
            for name in names
        ]
    return ModelRegistry(served)
