"""Row validation built from a manifest: each feature type, and the matrix it yields."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.errors import InvalidInput
from service.models.manifest import Feature
from tests.rows import JsonValidator, manifest_of, with_features

MANIFEST = manifest_of(
    "mixed",
    Feature("size", "float", min=0.0, max=10.0, limits=(0.0, 10.0)),
    Feature("count", "int", min=1, max=5, limits=(1, 5)),
    Feature("plan", "category", categories=("basic", "pro")),
    Feature("active", "bool"),
    Feature("free", "float"),
)
GOOD = {"size": 2.5, "count": 3, "plan": "pro", "active": True, "free": -1e300}


@pytest.fixture(scope="module")
def validator() -> JsonValidator:
    return JsonValidator(MANIFEST)


def errors_for(validator: JsonValidator, row: Any) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as caught:
        validator.validate_one(row)
    return caught.value.errors


def test_a_good_row_becomes_a_matrix_in_manifest_order(validator: JsonValidator) -> None:
    shuffled = dict(reversed(list(GOOD.items())))
    matrix = validator.validate_one(shuffled)
    assert matrix.shape == (1, 5) and matrix.dtype == object
    assert matrix.tolist() == [[2.5, 3, "pro", True, -1e300]]
    assert validator.validate_one(list(GOOD.values())).tolist() == matrix.tolist()


def test_numeric_manifests_give_float_matrices() -> None:
    numeric = with_features(MANIFEST, *MANIFEST.features[:2], *MANIFEST.features[3:])
    matrix = JsonValidator(numeric).validate_many([[1.0, 2, False, 0.5], [3.0, 4.0, True, 7]])
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [[1.0, 2.0, 0.0, 0.5], [3.0, 4.0, 1.0, 7.0]]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("size", "2.5", "Not a valid number."),
        ("size", True, "Not a valid number."),
        ("size", float("nan"), "Special numeric values"),
        ("size", float("inf"), "Special numeric values"),
        ("size", 10**400, "Number too large."),
        ("size", 10.01, "less than or equal to 10.0"),
        ("size", {}, "Not a valid number."),
        ("count", 2.5, "Not a valid integer."),
        ("count", "3", "Not a valid integer."),
        ("count", False, "Not a valid integer."),
        ("count", 6, "less than or equal to 5"),
        ("count", 0.0, "greater than or equal to 1"),
        ("plan", "enterprise", "Must be one of: basic, pro."),
        ("plan", 1, "Not a valid string."),
        ("active", 1, "Not a valid boolean."),
        ("active", "true", "Not a valid boolean."),
        ("active", None, "Field may not be null."),
        ("free", float("-inf"), "Special numeric values"),
    ],
)
def test_each_type_rejects_what_it_should(
    validator: JsonValidator, field: str, value: Any, message: str
) -> None:
    errors = errors_for(validator, {**GOOD, field: value})
    assert list(errors) == [field]
    assert message in errors[field][0]


def test_integral_floats_are_integers(validator: JsonValidator) -> None:
    assert validator.validate_one({**GOOD, "count": 4.0}).tolist()[0][1] == 4


def test_all_errors_of_a_row_are_reported_at_once(validator: JsonValidator) -> None:
    row = {"size": -1, "count": "x", "plan": "pro", "extra": 1}
    errors = errors_for(validator, row)
    assert set(errors) == {"size", "count", "active", "free", "extra"}
    assert errors["extra"] == ["Unknown field."]
    assert errors["active"] == ["Missing data for required field."]


def test_batch_errors_are_keyed_by_row(validator: JsonValidator) -> None:
    with pytest.raises(InvalidInput) as caught:
        validator.validate_many([GOOD, {**GOOD, "plan": "x"}, 7, list(GOOD.values())[:2]])
    errors = caught.value.errors
    assert set(errors) == {"1", "2", "3"}
    assert list(errors["1"]) == ["plan"]
    assert "_row" in errors["2"] and "_row" in errors["3"]
