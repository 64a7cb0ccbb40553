"""The manifest (``model.json``) that describes one stored model version.

The format is documented in ``model_store/README.md``. ``ManifestSchema`` is its
single description: it validates a manifest when it is read and renders one when
it is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
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

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
FEATURE_TYPES = ("float", "int", "category", "bool")
TASKS = ("classification", "regression")
# Names become URL path segments and directory names: keep them boring.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    description: str | None = None
    unit: str | None = None
    typical: Any = None  # a typical value from the training data

    @property
    def is_numeric(self) -> bool:
        return self.type in ("float", "int")

    def example_value(self) -> Any:
        """A valid value for this feature: the typical one if recorded, else a safe guess."""
        if self.typical is not None:
            return self.typical
        if self.type == "category":
            return self.categories[0]
        if self.type == "bool":
            return False
        low, high = self.min, self.max
        if low is not None and high is not None:
            middle = (low + high) / 2
        else:
            middle = next((bound for bound in (low, high) if bound is not None), 0.0)
        if self.type == "float":
            return float(middle)
        value = round(middle)
        if low is not None:
            value = max(value, math.ceil(low))
        if high is not None:
            value = min(value, math.floor(high))
        return int(value)


@dataclass(frozen=True)
class Artifact:
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    artifact: Artifact
    features: tuple[Feature, ...]
    trained_with: dict[str, str]
    classes: tuple[Any, ...] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trained_at: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    def example_row(self) -> dict[str, Any]:
        return {feature.name: feature.example_value() for feature in self.features}


class _ArtifactSchema(Schema):
    class Meta:
        unknown = RAISE

    file = fields.String(
        required=True, validate=validate.Regexp(r"^[^/\\]+$", error="must be a file name, not a path")
    )
    sha256 = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$", error="must be 64 lowercase hex digits")
    )

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Artifact:
        return Artifact(**data)


class FeatureSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(required=True, validate=validate.OneOf(FEATURE_TYPES))
    min = fields.Float(load_default=None, allow_none=True)
    max = fields.Float(load_default=None, allow_none=True)
    categories = fields.List(fields.String(), load_default=None, allow_none=True)
    description = fields.String(load_default=None, allow_none=True)
    unit = fields.String(load_default=None, allow_none=True)
    typical = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def _check_consistency(self, data: dict[str, Any], **_: Any) -> None:
        kind = data["type"]
        if kind == "category":
            if not data.get("categories"):
                raise ValidationError("a category feature needs a non-empty list", "categories")
            if len(set(data["categories"])) != len(data["categories"]):
                raise ValidationError("categories must be unique", "categories")
        elif data.get("categories") is not None:
            raise ValidationError("only category features have categories", "categories")
        if kind in ("category", "bool") and (data.get("min") is not None or data.get("max") is not None):
            raise ValidationError(f"a {kind} feature has no range", "min")
        low, high = data.get("min"), data.get("max")
        if low is not None and high is not None and low > high:
            raise ValidationError("min must not exceed max", "min")

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data["type"] == "int":  # bounds of an integer feature read best as integers
            for key, to_int in (("min", math.ceil), ("max", math.floor)):
                if data.get(key) is not None:
                    data[key] = to_int(data[key])
        return {key: value for key, value in data.items() if value is not None}

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Feature:
        if data["categories"] is not None:
            data["categories"] = tuple(data["categories"])
        return Feature(**data)


class ManifestSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    format_version = fields.Integer(load_default=FORMAT_VERSION, validate=validate.Equal(FORMAT_VERSION))
    name = fields.String(
        required=True,
        validate=validate.Regexp(NAME_PATTERN, error="must be 1-64 letters, digits, '_', '.' or '-'"),
    )
    version = fields.String(
        required=True,
        validate=validate.Regexp(NAME_PATTERN, error="must be 1-64 letters, digits, '_', '.' or '-'"),
    )
    task = fields.String(required=True, validate=validate.OneOf(TASKS))
    description = fields.String(load_default=None, allow_none=True)
    artifact = fields.Nested(_ArtifactSchema, required=True)
    trained_with = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    features = fields.List(fields.Nested(FeatureSchema), required=True, validate=validate.Length(min=1))
    classes = fields.List(fields.Raw(), load_default=None, allow_none=True)
    metrics = fields.Dict(keys=fields.String(), values=fields.Float(), load_default=dict)
    trained_at = fields.String(load_default=None, allow_none=True)
    dataset = fields.Dict(keys=fields.String(), load_default=dict)

    @validates_schema
    def _check_consistency(self, data: dict[str, Any], **_: Any) -> None:
        names = [feature.name for feature in data.get("features", [])]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValidationError(f"duplicate feature names: {', '.join(duplicates)}", "features")
        if "sklearn" not in data.get("trained_with", {}):
            raise ValidationError("must record the scikit-learn version as 'sklearn'", "trained_with")
        classes = data.get("classes")
        if data.get("task") == "classification":
            if not classes or len(classes) < 2:
                raise ValidationError("a classifier needs at least two class labels", "classes")
            if any(not isinstance(label, (str, int, bool)) for label in classes):
                raise ValidationError("class labels must be strings, integers or booleans", "classes")
        elif classes is not None:
            raise ValidationError("only classifiers have classes", "classes")

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value is not None}

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Manifest:
        classes = data.pop("classes")
        return Manifest(
            features=tuple(data.pop("features")),
            classes=None if classes is None else tuple(classes),
            **data,
        )


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of a manifest, as stored in ``model.json``."""
    return ManifestSchema().dump(manifest)


def parse_manifest(document: Any) -> Manifest:
    """Validate a decoded manifest; raises ``marshmallow.ValidationError``."""
    return ManifestSchema().load(document)


def read_manifest(path: Path) -> Manifest:
    """Read and validate ``model.json``; raises ``OSError``, ``ValueError`` or ``ValidationError``."""
    with path.open("rb") as handle:
        document = json.load(handle)
    return parse_manifest(document)


def write_manifest(manifest: Manifest, path: Path) -> None:
    # Round-trip through the schema so that nothing invalid is ever written.
    document = manifest_to_dict(manifest)
    parse_manifest(document)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
