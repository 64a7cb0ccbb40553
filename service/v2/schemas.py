"""The Open Inference Protocol's JSON objects as marshmallow schemas: they validate an inference
request's envelope (the tensors' elements are read by ``service.v2.tensors``) and document the
routes' answers in OpenAPI."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from service.v2.tensors import DATATYPES


def _scalars(value: dict[str, Any]) -> None:
    # The protocol's parameters are strings, numbers or booleans.
    for key, item in value.items():
        if not isinstance(item, (str, int, float)):
            raise ValidationError(f"Parameter {key!r} must be a string, a number or a boolean.")


def _parameters(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        validate=_scalars,
        metadata={"description": "Protocol parameters: strings, numbers or booleans."},
        **kwargs,
    )


class _Strict(Schema):
    class Meta:
        unknown = RAISE
        ordered = True


def _flag(parameters: dict[str, Any], name: str) -> None:
    if name in parameters and not isinstance(parameters[name], bool):
        raise ValidationError({"parameters": {name: ["Must be true or false."]}})


class V2RequestInputSchema(_Strict):
    name = fields.String(required=True)
    shape = fields.List(fields.Integer(strict=True, validate=validate.Range(min=0)), required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(list(DATATYPES)))
    parameters = _parameters(load_default=dict)
    data = fields.Raw(
        metadata={
            "description": "The elements in row-major order, flat or nested; left out when "
            "the parameter `binary_data_size` says they follow the JSON as bytes."
        }
    )

    @validates_schema
    def _data_or_bytes(self, item: dict[str, Any], **kwargs: Any) -> None:
        size = item.get("parameters", {}).get("binary_data_size")
        if size is None and "data" not in item:
            raise ValidationError("Send 'data', or the parameter 'binary_data_size' and the bytes.", "data")
        if size is not None and (type(size) is not int or size < 0):
            raise ValidationError(
                {"parameters": {"binary_data_size": ["Must be a whole number, 0 or more."]}}
            )
        if size is not None and "data" in item:
            raise ValidationError("Send 'data' or 'binary_data_size', not both.", "data")


class V2RequestOutputSchema(_Strict):
    name = fields.String(required=True)
    parameters = _parameters(load_default=dict)

    @validates_schema
    def _binary_flag(self, item: dict[str, Any], **kwargs: Any) -> None:
        _flag(item.get("parameters", {}), "binary_data")


class V2InferenceRequestSchema(_Strict):
    id = fields.String()
    parameters = _parameters(load_default=dict)
    inputs = fields.List(fields.Nested(V2RequestInputSchema), required=True, validate=validate.Length(min=1))
    outputs = fields.List(fields.Nested(V2RequestOutputSchema))

    @validates_schema
    def _binary_flag(self, item: dict[str, Any], **kwargs: Any) -> None:
        _flag(item.get("parameters", {}), "binary_data_output")


# --- Answers, for the OpenAPI document ----------------------------------------------------


class V2MetadataTensorSchema(Schema):
    name = fields.String(required=True)
    datatype = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True, metadata={"description": "-1: any size."})


class V2ServerMetadataSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    extensions = fields.List(fields.String(), required=True)


class V2ModelMetadataSchema(Schema):
    name = fields.String(required=True)
    versions = fields.List(fields.String())
    platform = fields.String(required=True)
    inputs = fields.List(fields.Nested(V2MetadataTensorSchema), required=True)
    outputs = fields.List(fields.Nested(V2MetadataTensorSchema), required=True)


class V2ResponseOutputSchema(Schema):
    name = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True)
    parameters = _parameters()
    data = fields.List(fields.Raw(), metadata={"description": "Left out when the output is sent as bytes."})


class V2InferenceResponseSchema(Schema):
    model_name = fields.String(required=True)
    model_version = fields.String()
    id = fields.String()
    parameters = _parameters()
    outputs = fields.List(fields.Nested(V2ResponseOutputSchema), required=True)


class V2ErrorSchema(Schema):
    error = fields.String(required=True)


def messages(error: ValidationError) -> str:
    """A schema's verdict as one line: ``inputs.0.shape: Missing data for required field.``"""
    return "; ".join(f"{path}: {' '.join(words)}" for path, words in _leaves(error.normalized_messages(), ""))


def _leaves(found: Any, path: str) -> list[tuple[str, list[str]]]:
    if isinstance(found, dict):
        leaves = []
        for key, value in found.items():
            inner = path if key == "_schema" else f"{path}.{key}" if path else str(key)
            leaves += _leaves(value, inner)
        return leaves
    return [(path or "request", [str(word) for word in found] if isinstance(found, list) else [str(found)])]
