"""The manifest (``model.json``) that describes one stored model version.

The format is documented in ``model_store/README.md``. ``ManifestSchema`` is its
single description: it validates a manifest when it is read and renders one when
it is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    pre_dump,
    validate,
    validates_schema,
)

from service.errors import listing
from service.models.onnx_artifact import OnnxArtifact, OnnxArtifactSchema

MANIFEST_FILE = "model.json"
FORMAT_VERSION = 1
FEATURE_TYPES = ("float", "int", "category", "bool")
# How a missing value of a category feature reaches the model: as the fitted
# encoder saw missing values in training (pandas reads them as NaN; a frame
# built by hand may hold None).
MISSING_VALUES = ("nan", "none")
TASKS = ("classification", "regression", "outlier_detection", "clustering")
# Tasks whose models may predict several outputs per row, each named by a target.
MULTI_OUTPUT_TASKS = ("classification", "regression")
# What a manifest's metrics were measured on: rows held out from training, or
# the sample given to ``models add`` (which may include training rows).
EVALUATION_DATA = ("held_out", "sample")
# Where the features' typical values came from: the training rows, the sample
# given to ``models add``, or what the fitted estimator learned (a scaler's means).
TYPICAL_ROW_KINDS = ("training_data", "sample", "estimator")
# Names become URL path segments and directory names: keep them boring. Match
# it with ``fullmatch`` only: ``$`` also matches before a final newline, so
# ``.match`` takes 'nl\n'. The ``^...$`` form is kept for the OpenAPI document,
# whose ECMA-262 patterns read ``$`` as the end of the string (``\Z`` is not one).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A file name in the version's own directory: no separators, no '.' or '..', no
# control characters (a NUL cannot even be passed to the operating system).
FILE_NAME_PATTERN = re.compile(r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f]+$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# A type a .skops artifact may hold: module.path.Name.
TYPE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){1,20}$")
MAX_TRUSTED_TYPES = 200

# Limits on a manifest, checked before the schema sees it. A real manifest is a
# few KiB: about eight values per feature, plus category lists, at most a few
# levels deep. These bound what one bad file can cost the process that loads
# every model at start-up:
# - bytes: read at most this much (a stray multi-GiB file is refused unread);
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# - depth: the root object is level 1, ``features`` 2, a feature 3, its
#   categories 4; the free-form ``dataset`` gets the rest. Far below the depth at
#   which rendering the manifest back as JSON (``GET /v1/models/NAME``) or any
#   recursive code would fail;
MAX_MANIFEST_DEPTH = 32
# - values (containers and scalars, keys not counted): the schema spends tens of
#   microseconds and about a KiB per bad value, so 100,000 bound a hostile
#   manifest to seconds and megabytes. Room for some 12,000 described features,
#   or a category feature with 90,000 categories.
MAX_MANIFEST_VALUES = 100_000


class ManifestLimitExceeded(ValueError):
    """The manifest is larger, deeper or holds more values than any real one (see the limits)."""


class WholeMatch(validate.Regexp):
    """``validate.Regexp`` over the whole string.

    ``validate.Regexp`` calls ``re.match``, where a pattern's ``$`` also matches
    before a final newline. The pattern itself is unchanged, so the OpenAPI
    document still shows it.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


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
    # A missing value (JSON null, an omitted feature, an empty CSV cell) is
    # passed to the model as ``missing_value`` instead of being refused.
    nullable: bool = False
    missing_value: str = "nan"
    # Declared hard limits (low, high; either may be None). ``min``..``max`` is
    # only the range observed in training: values outside it are served and flagged.
    limits: tuple[float | None, float | None] | None = None
    # A category feature whose fitted encoder handles categories it never saw:
    # an unseen one is served and flagged instead of refused.
    accepts_unknown: bool = False

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
    file: str  # model.joblib (a pickle) or model.skops (see ``service.models.store``)
    sha256: str
    # A .skops artifact: the types it holds beyond those skops trusts itself, trusted
    # when it was stored (as its hash was); any other type refuses it at load.
    trusted: tuple[str, ...] = ()

    @property
    def is_skops(self) -> bool:
        return self.file.endswith(".skops")


@dataclass(frozen=True)
class Evaluation:
    """How the manifest's metrics were measured."""

    data: str  # one of EVALUATION_DATA
    rows: int
    source: str | None = None  # a file name or a description of the rows

    @property
    def label(self) -> str:
        """What the metrics are worth, in words shown next to them."""
        if self.data == "held_out":
            return f"measured on {self.rows:,} held-out row{'' if self.rows == 1 else 's'}"
        return (
            f"measured on the {self.rows:,}-row sample given when the model was added, "
            "which may include training rows"
        )


@dataclass(frozen=True)
class TypicalRow:
    """Where the features' ``typical`` values came from."""

    kind: str  # one of TYPICAL_ROW_KINDS
    source: str | None = None  # the sample's file name, or what the estimator learned


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    artifact: Artifact
    features: tuple[Feature, ...]
    trained_with: dict[str, str]
    # One label per class; for a multi-output classifier, one tuple of labels per target.
    classes: tuple[Any, ...] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trained_at: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    targets: tuple[str, ...] | None = None  # the outputs' names, for a model with several
    evaluation: Evaluation | None = None
    typical_row: TypicalRow | None = None
    onnx: OnnxArtifact | None = None  # the compiled artifact, or why there is none (onnx_artifact.py)
    format_version: int = FORMAT_VERSION

    @property
    def outputs(self) -> int:
        """Values predicted per row."""
        return len(self.targets) if self.targets else 1

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def typical_row_known(self) -> bool:
        """True when every feature has a typical value, so the example row is not made up."""
        return all(feature.typical is not None for feature in self.features)

    @property
    def metrics_label(self) -> str | None:
        """What the metrics were measured on, when the manifest says (older ones do not)."""
        return self.evaluation.label if self.evaluation is not None and self.metrics else None

    def example_row(self) -> dict[str, Any]:
        return {feature.name: feature.example_value() for feature in self.features}


class _ArtifactSchema(Schema):
    class Meta:
        unknown = RAISE

    file = fields.String(
        required=True, validate=WholeMatch(FILE_NAME_PATTERN, error="must be a file name, not a path")
    )
    sha256 = fields.String(
        required=True, validate=WholeMatch(SHA256_PATTERN, error="must be 64 lowercase hex digits")
    )
    trusted = fields.List(
        fields.String(validate=WholeMatch(TYPE_NAME_PATTERN, error="must be a dotted type name")),
        validate=validate.Length(max=MAX_TRUSTED_TYPES),
    )

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Artifact:
        return Artifact(**{**data, "trusted": tuple(data.get("trusted", ()))})

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("trusted"):
            data.pop("trusted", None)
        return data


class _SmallObject(Schema):
    """A small object of a manifest: unknown keys refused, unset ones left out when written."""

    class Meta:
        unknown = RAISE

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value is not None}


class _LimitsSchema(_SmallObject):
    min = fields.Float(load_default=None, allow_none=True)
    max = fields.Float(load_default=None, allow_none=True)

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> tuple[float | None, float | None]:
        return (data["min"], data["max"])


class _EvaluationSchema(_SmallObject):
    data = fields.String(required=True, validate=validate.OneOf(EVALUATION_DATA))
    rows = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    source = fields.String(load_default=None, allow_none=True)

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Evaluation:
        return Evaluation(**data)


class _TypicalRowSchema(_SmallObject):
    kind = fields.String(required=True, validate=validate.OneOf(TYPICAL_ROW_KINDS))
    source = fields.String(load_default=None, allow_none=True)

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> TypicalRow:
        return TypicalRow(**data)


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
    nullable = fields.Boolean(load_default=False)
    missing_value = fields.String(load_default="nan", validate=validate.OneOf(MISSING_VALUES))
    limits = fields.Nested(_LimitsSchema, load_default=None, allow_none=True)
    accepts_unknown = fields.Boolean(load_default=False)

    @pre_dump
    def _limits_as_object(self, feature: Feature, **_: Any) -> dict[str, Any]:
        found = dataclasses.asdict(feature)
        if feature.limits is not None:
            found["limits"] = dict(zip(("min", "max"), feature.limits, strict=True))
        return found

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
        limits = data.get("limits")
        if limits is not None:
            if kind not in ("float", "int"):
                raise ValidationError(f"a {kind} feature has no limits", "limits")
            if limits[0] is not None and limits[1] is not None and limits[0] > limits[1]:
                raise ValidationError("min must not exceed max", "limits")
        if data.get("accepts_unknown") and kind != "category":
            raise ValidationError("only category features have unknown categories", "accepts_unknown")
        if data.get("missing_value", "nan") != "nan" and kind != "category":
            raise ValidationError(
                "only category features choose how a missing value is passed", "missing_value"
            )

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data["type"] == "int":  # bounds of an integer feature read best as integers
            for key, to_int in (("min", math.ceil), ("max", math.floor)):
                if data.get(key) is not None:
                    data[key] = to_int(data[key])
                if (data.get("limits") or {}).get(key) is not None:
                    data["limits"][key] = to_int(data["limits"][key])
        # The defaults are left out, so a manifest says only what is particular.
        for key, default in (("nullable", False), ("missing_value", "nan"), ("accepts_unknown", False)):
            if data.get(key) == default:
                del data[key]
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
        validate=WholeMatch(NAME_PATTERN, error="must be 1-64 letters, digits, '_', '.' or '-'"),
    )
    version = fields.String(
        required=True,
        validate=WholeMatch(NAME_PATTERN, error="must be 1-64 letters, digits, '_', '.' or '-'"),
    )
    task = fields.String(required=True, validate=validate.OneOf(TASKS))
    description = fields.String(load_default=None, allow_none=True)
    artifact = fields.Nested(_ArtifactSchema, required=True)
    trained_with = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    features = fields.List(fields.Nested(FeatureSchema), required=True, validate=validate.Length(min=1))
    targets = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)), load_default=None, allow_none=True
    )
    typical_row = fields.Nested(_TypicalRowSchema, load_default=None, allow_none=True)
    classes = fields.List(fields.Raw(), load_default=None, allow_none=True)
    metrics = fields.Dict(keys=fields.String(), values=fields.Float(), load_default=dict)
    evaluation = fields.Nested(_EvaluationSchema, load_default=None, allow_none=True)
    trained_at = fields.String(load_default=None, allow_none=True)
    dataset = fields.Dict(keys=fields.String(), load_default=dict)
    onnx = fields.Nested(OnnxArtifactSchema, load_default=None, allow_none=True)

    @validates_schema
    def _check_consistency(self, data: dict[str, Any], **_: Any) -> None:
        names = [feature.name for feature in data.get("features", [])]
        # Counted in one pass: names.count() for each name took minutes on 100,000 features.
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicates:
            raise ValidationError(f"duplicate feature names: {', '.join(duplicates)}", "features")
        if "sklearn" not in data.get("trained_with", {}):
            raise ValidationError("must record the scikit-learn version as 'sklearn'", "trained_with")
        targets = data.get("targets")
        if targets is not None:
            if data.get("task") not in MULTI_OUTPUT_TASKS:
                raise ValidationError("only classifiers and regressors have targets", "targets")
            if len(targets) < 2:
                raise ValidationError("targets name two or more outputs; omit it for one", "targets")
            if len(set(targets)) != len(targets):
                raise ValidationError("targets must be unique", "targets")
        classes = data.get("classes")
        if data.get("task") == "classification":
            if targets is None:
                _check_labels(classes, minimum=2)
            elif not isinstance(classes, list) or len(classes) != len(targets):
                raise ValidationError(
                    "a multi-output classifier needs one list of labels per target", "classes"
                )
            else:
                # A target may have one class only: a tree fitted on a column that never varies.
                for labels in classes:
                    _check_labels(labels, minimum=1)
        elif classes is not None:
            raise ValidationError("only classifiers have classes", "classes")
        if data.get("evaluation") is not None and not data.get("metrics"):
            raise ValidationError("says how metrics were measured, but there are no metrics", "evaluation")
        untypical = [feature.name for feature in data.get("features", []) if feature.typical is None]
        if data.get("typical_row") is not None and untypical:
            raise ValidationError(
                f"says where typical values came from, but {listing(untypical)} have none", "typical_row"
            )

    @post_dump
    def _drop_unset(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("targets") is not None and data.get("classes") is not None:
            data["classes"] = [list(labels) for labels in data["classes"]]
        return {key: value for key, value in data.items() if value is not None}

    @post_load
    def _build(self, data: dict[str, Any], **_: Any) -> Manifest:
        classes, targets = data.pop("classes"), data.pop("targets")
        if classes is not None and targets is not None:
            classes = [tuple(labels) for labels in classes]
        return Manifest(
            features=tuple(data.pop("features")),
            classes=None if classes is None else tuple(classes),
            targets=None if targets is None else tuple(targets),
            **data,
        )


def _check_labels(labels: Any, *, minimum: int) -> None:
    if not isinstance(labels, list) or len(labels) < minimum:
        raise ValidationError(
            f"a classifier needs at least {'two class labels' if minimum == 2 else 'one class label'}",
            "classes",
        )
    if any(not isinstance(label, (str, int, bool)) for label in labels):
        raise ValidationError("class labels must be strings, integers or booleans", "classes")


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of a manifest, as stored in ``model.json``."""
    return ManifestSchema().dump(manifest)


def parse_manifest(document: Any) -> Manifest:
    """Validate a decoded manifest; raises ``marshmallow.ValidationError``."""
    return ManifestSchema().load(document)


def decode_manifest(data: bytes) -> Manifest:
    """Decode and validate the bytes of ``model.json``.

    Raises ``ManifestLimitExceeded``, ``orjson.JSONDecodeError`` (a ``ValueError``:
    not RFC 8259 JSON in UTF-8) or ``marshmallow.ValidationError``. Never recurses
    without bound: orjson stops at 1,024 levels, and the limits are checked
    without recursion before the schema sees the document.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestLimitExceeded(f"is larger than {MAX_MANIFEST_BYTES:,} bytes (the size limit)")
    document = orjson.loads(data)
    _check_limits(document)
    return parse_manifest(document)


def _check_limits(document: Any) -> None:
    """Refuse a document deeper than MAX_MANIFEST_DEPTH or with more than MAX_MANIFEST_VALUES values."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    values = 1
    while pending:
        value, depth = pending.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_MANIFEST_DEPTH:
            raise ManifestLimitExceeded(
                f"is nested deeper than {MAX_MANIFEST_DEPTH} levels (the depth limit)"
            )
        children = value.values() if isinstance(value, dict) else value
        values += len(children)
        if values > MAX_MANIFEST_VALUES:  # counted before they are queued: memory stays bounded too
            raise ManifestLimitExceeded(f"holds more than {MAX_MANIFEST_VALUES:,} values (the value limit)")
        pending.extend((child, depth + 1) for child in children)


def write_manifest(manifest: Manifest, path: Path) -> None:
    # Round-trip through the schema so that nothing invalid is ever written.
    document = manifest_to_dict(manifest)
    parse_manifest(document)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
