"""The request shapes of the v1 JSON API, and how each becomes a list of rows.

Accepted bodies (a *row* is an object of named features or a list of values in
manifest order):

- a flat object of named features: ``{"sepal_length": 5.1, ...}``
- ``{"features": row}``
- ``{"instances": [row, ...]}``
- a bare list of rows (batch routes only)

The envelopes are marshmallow schemas; each row is then judged by the model's
rule set, in the prediction core (``service.models.json_rows``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from service.api.body import JsonBody
from service.errors import InvalidInput, TooManyRows
from service.models.json_rows import JsonRows

ROW_TYPE_ERROR = "Must be an object of named features or a list of values in manifest order."


class RowField(fields.Field):
    """One row: an object or a list. Its values are checked later, per model."""

    default_error_messages: ClassVar[dict[str, str]] = {"invalid": ROW_TYPE_ERROR}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, (dict, list)):
            raise self.make_error("invalid")
        return value


class RowList(fields.List):
    """A JSON array of rows, taken as it is: its rows are checked with their values.

    ``fields.List(fields.Raw())`` would call the inner field once per row, costing
    more than the vectorised row checks for a large batch while changing nothing.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Raw(allow_none=True), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return value


class FeaturesRequest(Schema):
    """``{"features": row}``: one row."""

    class Meta:
        unknown = RAISE

    features = RowField(required=True)


class InstancesRequest(Schema):
    """``{"instances": [row, ...]}``: several rows, answered in order."""

    class Meta:
        unknown = RAISE

    # Each row's shape is checked with its values, so that every bad row of a
    # batch is reported at once, by index.
    instances = RowList(required=True, validate=validate.Length(min=1))


class RowListRequest(Schema):
    """A bare list of rows, wrapped as ``{"rows": [...]}`` for validation."""

    rows = RowList(required=True, validate=validate.Length(min=1))


# Built once: a schema instance deep-copies its fields, which costs more than
# loading a small body with it. ``load`` keeps no state between calls.
_FEATURES = FeaturesRequest()
_INSTANCES = InstancesRequest()
_ROW_LIST = RowListRequest()


def rows_from_body(
    read: JsonBody, feature_names: tuple[str, ...], *, batch_route: bool, max_rows: int
) -> JsonRows:
    """Recognise the body's shape: its rows for the prediction core, and whether the answer
    is a list; raises ``InvalidInput`` or ``TooManyRows``."""
    body, numbers_only = read.document, read.numbers_only
    if isinstance(body, list):
        if not batch_route:
            raise InvalidInput(
                "A bare list of rows is accepted by the /predict/batch routes; "
                'here send {"instances": [...]}.',
                {"_body": ["Must be a JSON object."]},
            )
        rows = _load(_ROW_LIST, {"rows": body}, "rows")["rows"]
        return _bounded(JsonRows(rows, many=True, numbers_only=numbers_only), max_rows)
    if not isinstance(body, dict):
        raise InvalidInput(
            "The body must be a JSON object (or, on batch routes, a list of rows).",
            {"_body": ["Must be a JSON object."]},
        )
    # A model may itself have a feature called "features" or "instances"; then
    # the body is a flat row and the model's schema judges it.
    if "instances" in body and "instances" not in feature_names:
        rows = body["instances"]
        if len(body) > 1 or not isinstance(rows, list) or not rows:  # else the schema's verdict is plain
            rows = _load(_INSTANCES, body, "instances")["instances"]
        return _bounded(JsonRows(rows, many=True, numbers_only=numbers_only), max_rows)
    if "features" in body and "features" not in feature_names:
        row = body["features"]
        if len(body) > 1 or not isinstance(row, (dict, list)):
            row = _load(_FEATURES, body, "features")["features"]
        return JsonRows([row], many=batch_route, numbers_only=numbers_only)
    return JsonRows([body], many=batch_route, numbers_only=numbers_only)


def _load(schema: Schema, body: Any, shape: str) -> dict[str, Any]:
    try:
        return schema.load(body)
    except ValidationError as error:
        messages = error.normalized_messages()
        if shape == "rows":  # the bare list was wrapped only to validate it
            inner = messages["rows"]
            messages = {"_body": inner} if isinstance(inner, list) else inner
        raise InvalidInput(
            f"The {shape!r} envelope of the body is invalid; see 'errors'.", messages
        ) from None


def _bounded(rows: JsonRows, max_rows: int) -> JsonRows:
    if len(rows.rows) > max_rows:
        raise TooManyRows(len(rows.rows), max_rows)
    return rows
