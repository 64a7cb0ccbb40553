"""The manifest's ``onnx`` object: a model's compiled (ONNX) artifact, or why it has none.

``flask --app wsgi models compile`` (or ``models add --onnx``) writes it. Either
the conversion passed its parity check, and the object names the file beside
the pickle with its SHA-256 (checked at every load, as the pickle's is), or it
did not, and the object says why, so that every worker and every restart shows
the same reason. A manifest without the object (every older one) has no
compiled artifact and is served by scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    validate,
    validates_schema,
)

ONNX_FILE = "model.onnx"
ONNX_STATUSES = ("verified", "refused")
# The input tensor's element type: double for models that compute in float64
# (linear models), float for those that compare in float32 (scikit-learn's trees
# cast their input to float32 first, and so must the compiled model).
INPUT_TYPES = ("double", "float")
# How the input reaches the graph: "matrix", one tensor of every feature in manifest
# order (a model fitted on a numeric matrix); "columns", one tensor per feature named
# by it (a model fitted on a DataFrame, e.g. one-hot encoding a string column).
INPUT_LAYOUTS = ("matrix", "columns")
# What predicts a call that holds a missing value.
MISSING_VALUE_RUNTIMES = ("onnx", "sklearn")
_HEX = "0123456789abcdef"


@dataclass(frozen=True)
class OnnxArtifact:
    status: str  # one of ONNX_STATUSES
    file: str | None = None
    sha256: str | None = None
    input_type: str | None = None
    inputs: str = "matrix"  # one of INPUT_LAYOUTS
    opset: dict[str, int] = field(default_factory=dict)  # operator domain ("" is ONNX's own) -> version
    # How the parity check went: rows compared and the largest difference seen.
    parity: dict[str, Any] = field(default_factory=dict)
    converted_with: dict[str, str] = field(default_factory=dict)  # skl2onnx, onnx, onnxruntime versions
    reason: str | None = None  # why the conversion was refused
    # "sklearn": a call with a missing value (NaN) in any row goes to the estimator, because the
    # compiled model answers such rows differently (skl2onnx drops how trees route missing values).
    missing_values: str = "onnx"

    @property
    def verified(self) -> bool:
        return self.status == "verified"


class OnnxArtifactSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    status = fields.String(required=True, validate=validate.OneOf(ONNX_STATUSES))
    file = fields.String(load_default=None, allow_none=True, validate=validate.Equal(ONNX_FILE))
    sha256 = fields.String(
        load_default=None,
        allow_none=True,
        validate=[
            validate.Length(equal=64),
            validate.ContainsOnly(_HEX, error="must be lowercase hex digits"),
        ],
    )
    input_type = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(INPUT_TYPES))
    inputs = fields.String(load_default="matrix", validate=validate.OneOf(INPUT_LAYOUTS))
    opset = fields.Dict(keys=fields.String(), values=fields.Integer(strict=True), load_default=dict)
    parity = fields.Dict(keys=fields.String(), load_default=dict)
    converted_with = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    missing_values = fields.String(load_default="onnx", validate=validate.OneOf(MISSING_VALUE_RUNTIMES))

    @validates_schema
    def _check_consistency(self, data: dict[str, Any], **_: Any) -> None:
        if data["status"] == "verified":
            for key in ("file", "sha256", "input_type"):
                if data.get(key) is None:
                    raise ValidationError("a verified ONNX artifact needs it", key)
        elif data.get("reason") is None:
            raise ValidationError("a refused conversion says why", "reason")
        elif data.get("file") is not None:
            raise ValidationError("a refused conversion has no file", "file")

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data = {key: value for key, value in data.items() if value not in (None, {})}
        for key, default in (("missing_values", "onnx"), ("inputs", "matrix")):
            if data.get(key) == default:  # the defaults go unsaid
                del data[key]
        return data

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> OnnxArtifact:
        return OnnxArtifact(**data)
