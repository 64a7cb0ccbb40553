"""The Open Inference Protocol's dataplane: what its REST and gRPC front ends both call.

A front end reads its request into an ``InferenceRequest`` of ``Tensor``s and
renders the ``InferenceResponse`` it gets back; between the two, this module
turns tensors into rows, and the prediction core judges them with the model's
rule set and predicts them, as it does for the v1 routes. Nothing here knows
HTTP or gRPC; errors are the service's typed exceptions.

A model takes either one tensor of shape ``[N, n_features]``, columns in the
manifest's order, whatever its name (the metadata calls it ``input``), or one
tensor per feature, named after the feature, of shape ``[N]`` or ``[N, 1]``:
BYTES for a category, BOOL for a boolean (or numbers 0 and 1), a number type
for the others. A nullable feature's tensor may be left out (every row misses
it), and a NaN in it is a missing value. Its outputs are ``predict`` (labels or
values), ``predict_proba`` (a classifier's probabilities, columns in the order
of its classes) and ``decision_function`` (an outlier detector's scores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service import __version__
from service.errors import InvalidInput, InvalidTensor, ModelNotFound, ModelNotReady, TooManyRows, listing
from service.models import LoadedModel, ServedModel
from service.models.core import PredictionCore
from service.models.json_rows import JsonRows
from service.models.manifest import Feature
from service.models.registry import ModelRegistry
from service.models.rules import RowErrors, RuleSet
from service.v2.tensors import INTEGERS, NUMERIC, Output, Tensor, datatype_of, output

SERVER_NAME = "sklearn-model-service"
EXTENSIONS = ("binary_tensor_data",)
MATRIX_INPUT = "input"  # the name the metadata gives a model's one [N, n_features] tensor
PLATFORM = "sklearn"
_FEATURE_DATATYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "category": "BYTES"}


@dataclass(frozen=True)
class InferenceRequest:
    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...] | None = None  # None: every output the model has
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[Output]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# --- Health and metadata -----------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def server_ready(registry: ModelRegistry) -> bool:
    """Ready when every configured model is (as ``/ready`` says)."""
    entries = registry.entries()
    return bool(entries) and all(entry.ready for entry in entries)


def served(registry: ModelRegistry, name: str, version: str | None = None) -> ServedModel:
    """The served model ``name``, if it is (at) ``version``; raises ``ModelNotFound``."""
    entry = registry.entry(name)
    if version is not None and version != entry.version:
        raise ModelNotFound(name, version, entry.version)
    return entry


def loaded(registry: ModelRegistry, name: str, version: str | None = None) -> LoadedModel:
    """The model that answers ``name`` (at ``version``); raises ``ModelNotFound`` or ``ModelNotReady``."""
    entry = served(registry, name, version)
    if entry.model is None:
        raise ModelNotReady(name, entry.error or "it failed to load")
    return entry.model


def model_metadata(entry: ServedModel) -> dict[str, Any]:
    model = entry.model
    if model is None:
        raise ModelNotReady(entry.name, entry.error or "it failed to load")
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": input_specs(model),
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shape}
            for name, datatype, shape in output_specs(model)
        ],
    }


def input_specs(model: LoadedModel) -> list[dict[str, Any]]:
    """One [N, n_features] FP64 tensor for a model without categories; else one tensor per feature."""
    features = model.manifest.features
    if all(feature.type != "category" for feature in features):
        return [{"name": MATRIX_INPUT, "datatype": "FP64", "shape": [-1, len(features)]}]
    return [{"name": f.name, "datatype": _FEATURE_DATATYPES[f.type], "shape": [-1]} for f in features]


def output_specs(model: LoadedModel) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of each output, as ``infer`` answers them."""
    manifest = model.manifest
    targets = manifest.targets
    shape = [-1] if targets is None else [-1, len(targets)]
    if manifest.task == "classification":
        classes = manifest.classes if targets is None else None
        labels = datatype_of(np.asarray(classes, dtype=object)) if classes else _labels_datatype(model)
    elif manifest.task == "regression":
        labels = "FP64"
    else:  # outlier detection (1 or -1), clustering (a cluster's index)
        labels = "INT64"
    shapes = {"predict_proba": [-1, len(manifest.classes or ())], "decision_function": [-1]}
    return [("predict", labels, shape)] + [(name, "FP64", shapes[name]) for name in output_names(model)[1:]]


def output_names(model: LoadedModel) -> list[str]:
    """The outputs the model answers with, as ``infer`` names them; ``predict`` first."""
    names = ["predict"]
    if model.has_probabilities:
        names.append("predict_proba")
    if model.has_scores:
        names.append("decision_function")
    return names


def _labels_datatype(model: LoadedModel) -> str:
    # A multi-output classifier: its targets' labels, if they share a type.
    classes = getattr(model.estimator, "classes_", None)
    if isinstance(classes, list) and classes:
        kinds = {datatype_of(np.asarray(labels)) for labels in classes}
        if len(kinds) == 1:
            return kinds.pop()
    return "BYTES"


# --- Inference ---------------------------------------------------------------------------


def infer(
    core: PredictionCore,
    model: LoadedModel,
    request: InferenceRequest,
    *,
    request_id: str,
    client: str | None = None,
    max_rows: int,
) -> InferenceResponse:
    """Judge and predict the request's tensors with the one prediction core; strict: one bad row
    refuses the request (``InvalidInput``), as a v1 batch does."""
    available = output_names(model)
    wanted = list(request.outputs) if request.outputs is not None else available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise InvalidTensor(
            f"Model {model.name!r} has no output {unknown[0]!r}; its outputs are {', '.join(available)}."
        )
    count = within_rows_limit([tensor.shape for tensor in request.inputs], max_rows)
    if count == 0 and request.inputs:
        raise InvalidTensor("The inputs hold no rows: their first dimension is 0.")
    rows = tensor_rows(request.inputs, model.rules)
    with core.request(model, request_id, client) as scoring:
        scored = scoring.score(rows)
    prediction = scored.prediction
    arrays = {
        "predict": prediction.values,
        "predict_proba": prediction.probabilities,
        "decision_function": prediction.scores,
    }
    parameters: dict[str, Any] = {}
    if scored.warnings:
        # Values predicted although outside the training data (as v1's 'warnings'), by row index.
        warnings = {str(index): found for index, found in scored.warnings.items()}
        parameters["warnings"] = orjson.dumps(warnings).decode()
    return InferenceResponse(
        model_name=model.name,
        model_version=model.version,
        outputs=[output(name, arrays[name]) for name in wanted],
        id=request.id,
        parameters=parameters,
    )


def within_rows_limit(shapes: Sequence[Sequence[int]], max_rows: int) -> int:
    """The rows the tensors' shapes say (their first dimension); raises ``TooManyRows`` past
    ``max_rows``. A front end asks before it reads the elements, which then cost no memory."""
    count = max((shape[0] if len(shape) else 1 for shape in shapes), default=0)
    if count > max_rows:
        raise TooManyRows(count, max_rows)
    return count


@dataclass(frozen=True)
class TensorRows(JsonRows):
    """The rows a request's tensors hold, in manifest order: judged as JSON rows are.

    ``numbers_only``: every value is a number (from a number tensor), so that
    the rule set may judge whole columns without checking each value's type.
    """

    def refuse(self, errors: RowErrors) -> InvalidInput:
        # The protocol's error is one message: the faults follow it (service.api.problems).
        return InvalidInput(
            f"{len(errors)} of {len(self.rows)} rows are invalid; the faults by row index and feature:",
            {str(index): fields for index, fields in errors.items()},
        )


def tensor_rows(inputs: Sequence[Tensor], rules: RuleSet) -> TensorRows:
    """The rows of the request's tensors: one [N, n_features] tensor, or one tensor per feature."""
    if not inputs:
        raise InvalidTensor("The request has no inputs.")
    names = [tensor.name for tensor in inputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidTensor(f"The request has more than one input named {repeated[0]!r}.")
    single = inputs[0] if len(inputs) == 1 else None
    if single is not None and (
        single.name not in rules.known or (len(single.shape) == 2 and single.shape[1] == rules.width > 1)
    ):
        columns = _matrix_columns(single, rules)
        if single.datatype in NUMERIC and rules.numeric_only and not rules.nullable:
            # The common case, numbers for numbers: the rows are the matrix's.
            return TensorRows(single.values.reshape(single.rows, rules.width).tolist(), numbers_only=True)
    else:
        columns = _feature_columns(inputs, rules)
    values = [
        _python_values(feature, datatype, column)
        for feature, (datatype, column) in zip(rules.features, columns, strict=True)
    ]
    numbers_only = rules.numeric_only and all(datatype in NUMERIC for datatype, _ in columns)
    if numbers_only and rules.nullable:
        numbers_only = not any(None in column for column in values)
    return TensorRows([list(row) for row in zip(*values, strict=True)], numbers_only=numbers_only)


def _matrix_columns(tensor: Tensor, rules: RuleSet) -> list[tuple[str, np.ndarray]]:
    width = rules.width
    shape = tensor.shape
    if not (len(shape) == 2 and shape[1] == width) and not (width == 1 and len(shape) == 1):
        raise InvalidTensor(
            f"Input {tensor.name!r} has shape {list(shape)}; this model takes [N, {width}]: one row per "
            f"instance, its {width} features in manifest order ({listing(rules.names)})."
        )
    for feature in rules.features:
        _check_datatype(tensor, feature)
    matrix = tensor.values.reshape(len(tensor.values), width)
    return [(tensor.datatype, matrix[:, index]) for index in range(width)]


def _feature_columns(inputs: Sequence[Tensor], rules: RuleSet) -> list[tuple[str, np.ndarray]]:
    by_name = {tensor.name: tensor for tensor in inputs}
    unknown = [name for name in by_name if name not in rules.known]
    if unknown:
        raise InvalidTensor(
            f"The model has no input {unknown[0]!r}: send one tensor of shape [N, {rules.width}], or one "
            f"tensor per feature named after it ({listing(rules.names)})."
        )
    counts = set()
    for tensor in inputs:
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
            raise InvalidTensor(
                f"Input {tensor.name!r} has shape {list(tensor.shape)}; "
                "a feature's tensor has shape [N] or [N, 1]."
            )
        counts.add(tensor.shape[0])
    if len(counts) > 1:
        raise InvalidTensor(f"The inputs hold different numbers of rows: {sorted(counts)}.")
    (count,) = counts
    columns = []
    for feature in rules.features:
        tensor = by_name.get(feature.name)
        if tensor is None:
            if not feature.nullable:
                raise InvalidTensor(
                    f"Input {feature.name!r} is missing; the model's inputs are {listing(rules.names)}."
                )
            columns.append(("FP64", np.full(count, math.nan)))
            continue
        _check_datatype(tensor, feature)
        columns.append((tensor.datatype, tensor.values.reshape(count)))
    return columns


def _check_datatype(tensor: Tensor, feature: Feature) -> None:
    datatype = tensor.datatype
    if feature.type == "category":
        fits, takes = datatype == "BYTES", "BYTES"
    elif feature.type == "bool":
        fits, takes = datatype == "BOOL" or datatype in NUMERIC, "BOOL, or numbers 0 and 1"
    else:
        fits, takes = datatype in NUMERIC, "a number datatype (FP32, FP64, INT32, INT64, ...)"
    if not fits:
        raise InvalidTensor(
            f"Input {tensor.name!r} is {datatype}, "
            f"but feature {feature.name!r} ({feature.type}) takes {takes}."
        )


def _python_values(feature: Feature, datatype: str, column: np.ndarray) -> list[Any]:
    """A column as the Python values the rule set judges (ints stay exact, NaN misses where it may)."""
    values = column.tolist()
    if datatype in NUMERIC:
        if feature.nullable and datatype not in INTEGERS:
            values = [None if value != value else value for value in values]
        if feature.type == "bool":
            values = [_bool(value) for value in values]
    return values


def _bool(value: Any) -> Any:
    # 0 and 1 are false and true; anything else stays itself, for the rule set to refuse.
    return value if value is None else {0: False, 1: True}.get(value, value)
