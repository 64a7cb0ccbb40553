"""Response shapes of the v1 API, declared once for the OpenAPI document.

Request shapes live where they are validated (``service.api.payload`` for the
envelopes, ``service.models.rules`` for each model's rows); the answers are
described here, and tests check every answer against them.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from service.models import LoadedModel
from service.models.loaded import probability_keys
from service.models.manifest import TASKS, ManifestSchema


class ProblemSchema(Schema):
    """RFC 9457 problem details: the body of every error."""

    type = fields.String(required=True, metadata={"example": "/problems/invalid-input"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        metadata={
            "description": "Invalid input only: messages per field (per row index first for several rows)."
        }
    )
    errors_omitted = fields.Integer(
        metadata={
            "description": "Invalid input only: bad fields found beyond the first 100 listed in `errors`."
        }
    )
    request_id = fields.String(metadata={"description": "Server errors only: quote it when reporting."})
    models = fields.Dict(metadata={"description": "Readiness only: the status of each model."})


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class ModelStatusSchema(Schema):
    version = fields.String(required=True, allow_none=True)
    ready = fields.Boolean(required=True)
    task = fields.String(validate=validate.OneOf(TASKS))
    error = fields.String(metadata={"description": "Why the model is not ready."})


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("ready"))
    models = fields.Dict(keys=fields.String(), values=fields.Nested(ModelStatusSchema), required=True)


class ModelSummarySchema(ModelStatusSchema):
    name = fields.String(required=True)
    versions = fields.List(fields.String(), required=True, metadata={"description": "Stored versions."})


class ModelListSchema(Schema):
    default_model = fields.String(required=True)
    models = fields.List(fields.Nested(ModelSummarySchema), required=True)


class ModelMetadataSchema(ManifestSchema):
    """A model's manifest and how it is served; a model that is not ready has only the status."""

    version = fields.String(required=True, allow_none=True)
    ready = fields.Boolean(required=True)
    error = fields.String()
    loaded_at = fields.String(metadata={"description": "When this process loaded the model (UTC)."})
    metrics_label = fields.String(
        metadata={
            "description": "What the metrics were measured on, in words (from `evaluation`), e.g. "
            "'measured on 38 held-out rows'."
        }
    )
    runtime = fields.String(
        validate=validate.OneOf(["onnx", "sklearn"]),
        metadata={
            "description": "What predicts: `onnx` (the compiled artifact, see `onnx`) or `sklearn` "
            "(the pickled estimator)."
        },
    )
    warnings = fields.List(
        fields.String(), metadata={"description": "Load warnings, e.g. version mismatches."}
    )
    serving_with = fields.Dict(keys=fields.String(), values=fields.String())
    stored_versions = fields.List(fields.String())


def metadata_schema() -> ModelMetadataSchema:
    # Only name, version and ready are always present.
    return ModelMetadataSchema(
        partial=tuple(set(ModelMetadataSchema().fields) - {"name", "version", "ready"})
    )


def _value_field(task: str, classes: tuple[Any, ...] | None, **options: Any) -> fields.Field:
    """One predicted value of a task: a class among ``classes``, a number, 1 or -1, a cluster index."""
    if task == "regression":
        return fields.Float(metadata={"description": "The predicted value."}, **options)
    if task == "outlier_detection":
        return fields.Integer(
            validate=validate.OneOf([1, -1]),
            metadata={"description": "1 for an inlier, -1 for an outlier (scikit-learn's convention)."},
            **options,
        )
    if task == "clustering":
        return fields.Integer(
            validate=validate.Range(min=0), metadata={"description": "The cluster's index."}, **options
        )
    return fields.Raw(
        validate=validate.OneOf(classes or ()), metadata={"description": "The predicted class."}, **options
    )


def _targets_schema(model: LoadedModel) -> type[Schema]:
    manifest = model.manifest
    targets = manifest.targets or ()
    classes = manifest.classes or (None,) * len(targets)
    return Schema.from_dict(
        {
            target: _value_field(manifest.task, labels, required=True)
            for target, labels in zip(targets, classes, strict=True)
        },
        name=f"{model.name}.Targets",
    )


def _label_field(
    model: LoadedModel, targets: type[Schema] | None, *, allow_none: bool = False
) -> fields.Field:
    """A row's answer; ``allow_none`` where an invalid row is answered with null (``on_error=row``)."""
    if targets is None:
        return _value_field(model.manifest.task, model.manifest.classes, allow_none=allow_none)
    return fields.Nested(
        targets, allow_none=allow_none, metadata={"description": "The predicted value of each target."}
    )


def _probabilities_schema(model: LoadedModel) -> type[Schema]:
    return Schema.from_dict(
        {
            label: fields.Float(required=True, validate=validate.Range(0, 1))
            for label in probability_keys(model.manifest.classes or ())
        },
        name=f"{model.name}.Probabilities",
    )


_WARNINGS = (
    "Only when a value was predicted although the model saw none like it: outside the "
    "training data's range, or a category it never saw that its encoder takes."
)


def prediction_schemas(model: LoadedModel) -> tuple[type[Schema], type[Schema]]:
    """(single-row answer, several-rows answer) for one model."""
    common: dict[str, fields.Field] = {
        "model": fields.String(required=True, validate=validate.Equal(model.name)),
        "model_version": fields.String(required=True),
    }
    targets = _targets_schema(model) if model.manifest.targets else None
    single: dict[str, fields.Field] = {**common, "prediction": _label_field(model, targets)}
    single["prediction"].required = True
    # With on_error=row, an invalid row's entries are null and ``errors`` says why.
    many: dict[str, fields.Field] = {
        **common,
        "predictions": fields.List(_label_field(model, targets, allow_none=True), required=True),
        "errors": fields.Dict(
            keys=fields.String(),
            values=fields.Dict(keys=fields.String(), values=fields.List(fields.String())),
            metadata={
                "description": "With `on_error=row`, when some row is invalid: its bad fields by row "
                'index (`{"3": {"petal_width": ["Not a valid number."]}}`), at most 100 fields.'
            },
        ),
        "errors_omitted": fields.Integer(
            metadata={
                "description": "With `on_error=row`: bad fields found beyond the 100 listed in `errors`."
            }
        ),
    }
    single["warnings"] = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": _WARNINGS + " By feature."},
    )
    many["warnings"] = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.List(fields.String())),
        metadata={"description": _WARNINGS + " By row index, then feature."},
    )
    if model.has_probabilities:
        probabilities = _probabilities_schema(model)
        single["probabilities"] = fields.Nested(probabilities, required=True)
        many["probabilities"] = fields.List(fields.Nested(probabilities, allow_none=True), required=True)
    if model.has_scores:
        score = {"description": "The decision function: negative for an outlier, the lower the more so."}
        single["score"] = fields.Float(required=True, metadata=score)
        many["scores"] = fields.List(fields.Float(allow_none=True, metadata=score), required=True)
    return (
        Schema.from_dict(single, name=f"{model.name}.Prediction"),
        Schema.from_dict(many, name=f"{model.name}.Predictions"),
    )


def compact_schema(model: LoadedModel, many: type[Schema]) -> type[Schema]:
    """The several-rows answer with ``format=compact``: names once, numbers as lists in their order.

    ``many``: the model's default several-rows answer (``prediction_schemas``), whose
    other fields (errors, errors_omitted, warnings, scores) it shares."""
    manifest = model.manifest
    shared = many().fields
    declared = {name: field for name, field in shared.items() if name not in _PER_ROW_FIELDS}
    if manifest.targets:
        declared["targets"] = fields.List(
            fields.String(),
            required=True,
            metadata={"description": "The targets, in the order of each row's values."},
        )
        # Each target has its own classes: a label is checked against them by name in the default answer.
        value = (
            fields.Raw(metadata={"description": "The predicted class of the target at this position."})
            if manifest.task == "classification"
            else _value_field(manifest.task, None)
        )
        row: fields.Field = fields.List(value, allow_none=True)
    else:
        row = _value_field(manifest.task, manifest.classes, allow_none=True)
    declared["predictions"] = fields.List(row, required=True)
    if model.has_probabilities:
        declared["classes"] = fields.List(
            fields.Raw(),
            required=True,
            metadata={"description": "The class labels, in the order of each row's probabilities."},
        )
        declared["probabilities"] = fields.List(
            fields.List(fields.Float(validate=validate.Range(0, 1)), allow_none=True), required=True
        )
    if model.has_scores:
        declared["scores"] = shared["scores"]
    return Schema.from_dict(declared, name=f"{model.name}.CompactPredictions")


_PER_ROW_FIELDS = ("predictions", "probabilities", "scores")
