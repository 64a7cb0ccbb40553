"""Compiling a stored model to ONNX: convert with skl2onnx, check parity, store the artifact or the refusal.

A conversion is kept only if the compiled model answers what the estimator
answers on the parity rows: the sample's rows (when given), the manifest's
typical row, and rows drawn at random (seeded) within each feature's recorded
range (half of the numbers rounded to the precision the training data shows,
as real rows are), plus rows with missing values for a model that takes them.
Labels and outlier labels must be identical, probabilities within
``TOLERANCE``, regression values and outlier scores within ``TOLERANCE``
relative to their size (absolute below 1). A conversion that passes on complete
rows only is kept, and calls with a missing value go to the estimator.

The input type is tried as ``double`` first, then ``float`` (scikit-learn's
trees compare in float32: only a float input reproduces them exactly).
skl2onnx and onnxruntime are imported here, in the command that compiles, not
by the server.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import replace
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.models.json_rows import JsonRows
from service.models.loaded import LoadedModel
from service.models.manifest import MANIFEST_FILE, Manifest, write_manifest
from service.models.onnx_artifact import INPUT_TYPES, ONNX_FILE, OnnxArtifact
from service.models.onnx_runtime import OnnxRuntime, missing_rows
from service.models.shapes import final_step
from service.models.store import ModelStore, bounded

TOLERANCE = 1e-5
DRAWN_ROWS = 2000
SEED = 22
_MAX_REASON = 400


def compile_version(
    store: ModelStore, name: str, version: str, sample: pd.DataFrame | None = None
) -> OnnxArtifact:
    """Convert and check one stored version, and record the outcome in its manifest.

    Returns the manifest's new ``onnx`` object: verified (``model.onnx`` written
    beside the pickle) or refused with the reason (any earlier ``model.onnx``
    removed, so the model is served by scikit-learn). Raises ``ModelLoadError``
    when the stored version itself cannot be loaded.
    """
    model = store.load(name, version, runtime="sklearn")
    data, artifact = _compiled(model, sample)
    _record(store.root / name / version, model.manifest, artifact, data)
    return artifact


def _compiled(model: LoadedModel, sample: pd.DataFrame | None) -> tuple[bytes | None, OnnxArtifact]:
    unsupported = _unsupported(model)
    if unsupported:
        return None, _refused(unsupported)
    rows = parity_rows(model, sample)
    gaps = missing_rows(rows)
    complete, incomplete = rows[~gaps], rows[gaps]
    failures = []
    for input_type in INPUT_TYPES:
        try:
            onnx_model = _convert(model, input_type)
        except Exception as error:  # skl2onnx's errors name the step it cannot convert
            failures.append(f"with {input_type} input, skl2onnx cannot convert it ({_first_line(error)})")
            continue
        data = onnx_model.SerializeToString()
        candidate = OnnxArtifact(
            status="verified",
            file=ONNX_FILE,
            input_type=input_type,
            inputs="columns" if by_columns(model) else "matrix",
        )
        runtime = OnnxRuntime(data, candidate, model.manifest)
        if runtime.session() is None:
            failures.append(f"with {input_type} input, {runtime.failed}")
            continue
        difference, mismatch = _parity(model, runtime, complete)
        if mismatch:
            failures.append(f"with {input_type} input, {mismatch}")
            continue
        parity = {"rows": len(rows), "max_difference": difference, "tolerance": TOLERANCE}
        missing_values = "onnx"
        if len(incomplete):
            gap_difference, gap_mismatch = _parity(model, runtime, incomplete)
            if gap_mismatch:
                missing_values = "sklearn"
                parity["missing_values"] = (
                    f"rows with a missing value are predicted by scikit-learn: on those, {gap_mismatch}"
                )
            else:
                parity["max_difference"] = max(difference, gap_difference)
        return data, replace(
            candidate,
            sha256=hashlib.sha256(data).hexdigest(),
            opset={entry.domain: int(entry.version) for entry in onnx_model.opset_import},
            parity=parity,
            converted_with=_versions(),
            missing_values=missing_values,
        )
    return None, _refused("; ".join(failures))


def _parity(model: LoadedModel, runtime: OnnxRuntime, rows: np.ndarray) -> tuple[float, str | None]:
    """(largest difference, why the compiled model answers ``rows`` otherwise than the estimator, or None)."""
    try:
        answered = replace_compiled(model, runtime).predict(rows)
    except Exception as error:
        return 0.0, f"onnxruntime cannot run it ({_first_line(error.__cause__ or error)})"
    return _difference(model, model.predict(rows), answered)


def replace_compiled(model: LoadedModel, compiled: OnnxRuntime) -> LoadedModel:
    """The same model, predicting with ``compiled``."""
    return LoadedModel(manifest=model.manifest, estimator=model.estimator, compiled=compiled)


def _unsupported(model: LoadedModel) -> str | None:
    if model.manifest.targets is not None:
        return "a model with several outputs is served by scikit-learn only"
    return None


def by_columns(model: LoadedModel) -> bool:
    """Whether the graph takes one tensor per feature: the estimator chooses columns by name, or
    some feature is a category (skl2onnx takes strings in tensors of their own)."""
    return model.rules.object_matrix or hasattr(model.estimator, "feature_names_in_")


def _convert(model: LoadedModel, input_type: str) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    numbers = DoubleTensorType if input_type == "double" else FloatTensorType
    features = model.manifest.features
    if by_columns(model):
        inputs = [
            (feature.name, (StringTensorType if feature.type == "category" else numbers)([None, 1]))
            for feature in features
        ]
    else:
        inputs = [("X", numbers([None, len(features)]))]
    options = {}
    if model.has_probabilities:
        # Probabilities as a matrix, not one dictionary per row.
        options[id(final_step(model.estimator))] = {"zipmap": False}
    # skl2onnx reads attributes that scikit-learn deprecates (an SVC's probA_): not the operator's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return convert_sklearn(model.estimator, initial_types=inputs, options=options or None)
        except RuntimeError as error:
            if "target_opset" not in str(error):
                raise
        # Some converters (an IsolationForest's) need an older ai.onnx.ml than skl2onnx picks, and say so.
        from skl2onnx import get_latest_tested_opset_version

        opsets = {"": get_latest_tested_opset_version(), "ai.onnx.ml": 3}
        return convert_sklearn(
            model.estimator, initial_types=inputs, options=options or None, target_opset=opsets
        )


def parity_rows(model: LoadedModel, sample: pd.DataFrame | None = None) -> Any:
    """The rows the conversion is checked on: the validated matrix the service would predict on.

    The sample's valid rows, the typical row, ``DRAWN_ROWS`` complete rows
    drawn in range (half rounded to the data's precision) and, when some
    feature is nullable, a quarter as many again with missing values.
    """
    manifest = model.manifest
    rng = np.random.default_rng(SEED)
    columns = [_drawn(feature, rng) for feature in manifest.features]
    drawn = [dict(zip(manifest.feature_names, row, strict=True)) for row in zip(*columns, strict=True)]
    rows = [manifest.example_row(), *drawn]
    nullable = [feature.name for feature in manifest.features if feature.nullable]
    if nullable:
        for index in rng.choice(DRAWN_ROWS, DRAWN_ROWS // 4, replace=False):
            gapped = dict(drawn[index])
            for name in {rng.choice(nullable), *(name for name in nullable if rng.random() < 0.2)}:
                gapped[name] = None
            rows.append(gapped)
    if sample is not None:
        given = sample.reindex(columns=list(manifest.feature_names)).astype(object)
        rows[:0] = given.where(given.notna(), None).to_dict("records")
    return JsonRows(rows).check(model.rules, strict=False).matrix


def _drawn(feature: Any, rng: np.random.Generator) -> list[Any]:
    """``DRAWN_ROWS`` valid values of one feature, as JSON would give them."""
    if feature.type == "category":
        return [str(value) for value in rng.choice(feature.categories, DRAWN_ROWS)]
    if feature.type == "bool":
        return [bool(value) for value in rng.integers(0, 2, DRAWN_ROWS)]
    low, high = _range(feature)
    values = rng.uniform(low, high, DRAWN_ROWS)
    if feature.type == "int":
        return [int(value) for value in np.clip(np.round(values), np.ceil(low), np.floor(high))]
    half = DRAWN_ROWS // 2
    values[:half] = np.round(values[:half], _decimals(feature))
    return values.tolist()


def _range(feature: Any) -> tuple[float, float]:
    low = next((b for b in (feature.min, (feature.limits or (None, None))[0]) if b is not None), None)
    high = next((b for b in (feature.max, (feature.limits or (None, None))[1]) if b is not None), None)
    typical = float(feature.typical) if feature.typical is not None else 0.0
    spread = max(abs(typical), 1.0)
    return (typical - spread if low is None else low, typical + spread if high is None else high)


def _decimals(feature: Any) -> int:
    """Decimal places the training data shows (in its recorded bounds and typical value), at most 6."""
    places = 0
    for value in (feature.min, feature.max, feature.typical):
        if isinstance(value, float) and np.isfinite(value):
            text = repr(value)
            places = max(places, len(text.partition(".")[2]) if "e" not in text else 6)
    return min(places, 6)


def _difference(model: LoadedModel, expected: Any, answered: Any) -> tuple[float, str | None]:
    """(largest difference in numbers, why the answers differ or None)."""
    if model.manifest.task == "regression":
        gap = np.abs(answered.values - expected.values) / np.maximum(np.abs(expected.values), 1.0)
        worst = float(gap.max(initial=0.0))
        return worst, None if worst <= TOLERANCE else f"a predicted value differs by {worst:.3g} (relative)"
    if not np.array_equal(answered.values, expected.values):
        differ = int(np.count_nonzero(answered.values != expected.values))
        return 0.0, f"{differ} of {len(expected.values)} rows get another label"
    worst = 0.0
    for what, mine, theirs in (
        ("a probability", answered.probabilities, expected.probabilities),
        ("an outlier score", answered.scores, expected.scores),
    ):
        if theirs is None:
            continue
        gap = np.abs(mine - theirs) / (1.0 if what == "a probability" else np.maximum(np.abs(theirs), 1.0))
        worst = max(worst, float(gap.max(initial=0.0)))
        if worst > TOLERANCE:
            return worst, f"{what} differs by {worst:.3g} (more than {TOLERANCE})"
    return worst, None


def _record(directory: Path, manifest: Manifest, artifact: OnnxArtifact, data: bytes | None) -> None:
    """Write ``model.onnx`` (or remove it) and the manifest that names it, each replaced whole."""
    target = directory / ONNX_FILE
    if data is not None:
        _replace_file(target, lambda path: path.write_bytes(data))
    _replace_file(
        directory / MANIFEST_FILE, lambda path: write_manifest(replace(manifest, onnx=artifact), path)
    )
    if data is None:
        target.unlink(missing_ok=True)


def _replace_file(target: Path, write: Any) -> None:
    descriptor, scratch = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    os.close(descriptor)
    try:
        write(Path(scratch))
        os.chmod(scratch, 0o644)  # mkstemp makes it private to its creator
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _refused(reason: str) -> OnnxArtifact:
    return OnnxArtifact(status="refused", reason=bounded(reason, _MAX_REASON), converted_with=_versions())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _versions() -> dict[str, str]:
    return {package: installed_version(package) for package in ("skl2onnx", "onnx", "onnxruntime")}
