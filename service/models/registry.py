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
from service.models.loaded import LoadedModel
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


def prediction_problem(error: InvalidInput | PredictionFailed) -> str:
    """Why rows could not be predicted, in the estimator's own words (what its author needs)."""
    if isinstance(error, InvalidInput):
        return f"invalid input: {json.dumps(error.errors)}"
    cause = error.__cause__
    return f"{type(cause).__name__}: {cause}"


def warm_up(model: LoadedModel) -> None:
    """Predict the manifest's example row through the same rules and call as a request.

    A typical row (from data, or from what the estimator learned) must predict:
    else raises ``ModelLoadError``. Without one the row is made up (zeros, first
    categories), and a sound model may fail on it (a radius-neighbours model
    finds no neighbour near zeros), so that failure becomes a load warning and
    the model serves.
    """
    manifest = model.manifest
    try:
        model.predict(validated(model.rules, JsonRows([manifest.example_row()], many=False)))
    except (InvalidInput, PredictionFailed) as error:
        if manifest.typical_row_known:
            reason = f"predicting its typical row failed: {prediction_problem(error)}"
            raise ModelLoadError(model.name, model.version, reason) from error
        note = bounded(
            "predicting a made-up example row (no typical row is known) failed, and the model is served "
            f"anyway, as a sound model can fail on made-up values: {prediction_problem(error)}"
        )
        log.warning("model %s version %s: %s", model.name, model.version, note)
        model.warnings = (*model.warnings, note)


def load_served_model(
    store: ModelStore,
    name: str,
    pinned: str | None,
    *,
    strict_versions: bool,
    range_policy: str = "flag",
    runtime: str = "auto",
    model_threads: int = 1,
) -> ServedModel:
    """Load, check and warm up one model; a failure is logged and returned, not raised.

    Whatever a model's files make the loader raise, that model is not ready and
    the others still serve; only KeyboardInterrupt and SystemExit go through.
    """
    version = None
    started = time.perf_counter()
    try:
        version = store.resolve(name, pinned)
        model = store.load(
            name,
            version,
            strict_versions=strict_versions,
            range_policy=range_policy,
            runtime=runtime,
            model_threads=model_threads,
        )
        warm_up(model)
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
    log.info("loaded model %s version %s in %.3fs (runtime %s)", name, version, seconds, model.runtime)
    return ServedModel(name=name, version=version, model=model, load_seconds=seconds)


def load_registry(
    store: ModelStore,
    names: Iterable[str] = (),
    pins: Mapping[str, str] | None = None,
    *,
    strict_versions: bool = False,
    range_policy: str = "flag",
    runtime: str = "auto",
    model_threads: int = 1,
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
                store,
                name,
                pins.get(name),
                strict_versions=strict_versions,
                range_policy=range_policy,
                runtime=runtime,
                model_threads=model_threads,
            )
            for name in names
        ]
    return ModelRegistry(served)
