"""JSON rows: the vectorised checks and the exact rules (the row schema) agree on every input.

``check_rows`` takes the vectorised path when it can; ``exact_row`` is the
schema alone, row by row. For any batch, both must accept it with the same
matrix (values, dtype, Python types) or refuse it with the same message and
the same errors for the same rows and fields.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from flask import Flask, request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.api.body import read_json
from service.errors import InvalidInput
from service.models import json_rows
from service.models.json_rows import JsonRows, check_rows, exact_row
from service.models.manifest import Feature, Manifest
from service.models.rules import RuleSet
from tests.rows import JsonValidator, manifest_of

MANIFESTS = {
    # Like the demo models: bounded floats only.
    "floats": manifest_of("floats", Feature("a", "float", min=-1.5, max=2.5), Feature("b", "float", min=0.0)),
    "numbers": manifest_of(
        "numbers",
        Feature("x", "float"),
        Feature("n", "int", min=1.0, max=5.0),
        Feature("big", "int", min=-(2.0**60), max=2.0**60),
        Feature("m", "int"),
    ),
    "mixed": manifest_of(
        "mixed",
        Feature("size", "float", min=0.0, max=10.0),
        Feature("count", "int", min=1, max=5),
        Feature("plan", "category", categories=("basic", "pro")),
        Feature("active", "bool"),
    ),
    "flags": manifest_of("flags", Feature("on", "bool"), Feature("level", "int", max=3.0)),
    "single": manifest_of("single", Feature("only", "float", max=1.0)),
}
# Under the reject policy the observed ranges refuse, so both ways judge bounds too.
VALIDATORS = {name: JsonValidator(manifest, "reject") for name, manifest in MANIFESTS.items()}


def exactly(rules: RuleSet, rows: list[Any]) -> np.ndarray:
    """The rows judged by the exact rules alone, one by one, as a batch."""
    checked = [exact_row(rules, row) for row in rows]
    errors = {index: row_errors for index, (_, row_errors) in enumerate(checked) if row_errors}
    if errors:
        raise JsonRows(rows).refuse(errors)
    return rules.assemble_rows([values for values, _ in checked])


# Values a client might send for any feature: around the bounds, integral or
# not, signed zeros, the limits of floats and exact integers, and other JSON types.
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 3, 5, 6, -1, 0.0, -0.0, 1.0, 2.5, 3.5, -1.5, 2.5000000000000004, 10.0, 1e300]),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**60, 2**60 + 1, 2**64, 10**30, 10**400]),
    st.sampled_from([math.nan, math.inf, -math.inf, 2.0**53, 2.0**60, 2.0**61]),
    st.integers(min_value=-10, max_value=10),
    st.floats(min_value=-12, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
)
OTHERS = st.one_of(
    st.booleans(),
    st.none(),
    st.sampled_from(["basic", "pro", "Pro", "", "1", "2.5", "true"]),
    st.text(max_size=3),
    st.just([]),
    st.just([1.0]),
    st.just({"a": 1}),
)
VALUES = st.one_of(NUMBERS, NUMBERS, OTHERS)


@st.composite
def rows_for(draw: st.DrawFn, manifest: Manifest, *, regular: bool, as_object: bool) -> Any:
    """A row for ``manifest``: mostly well-typed, sometimes not; irregular shapes when asked."""
    names = list(manifest.feature_names)
    # Most batches hold only valid values, so that the vectorised path is taken
    # and must agree; the others mix in any value.
    clean = draw(st.integers(0, 2)) > 0
    typed = [_valid_value(feature) if clean else _typed_value(feature) for feature in manifest.features]
    values = [draw(strategy if clean else st.one_of(strategy, strategy, VALUES)) for strategy in typed]
    if not regular:
        shape = draw(st.sampled_from(["short", "long", "missing", "unknown", "scalar", "none", "fine"]))
        if shape == "short":
            values = values[:-1]
        elif shape == "long":
            values = [*values, 1.0]
        elif shape == "scalar":
            return 1.0
        elif shape == "none":
            return None
        elif shape in ("missing", "unknown"):
            row = dict(zip(names, values, strict=True))
            row.pop(names[0])
            if shape == "unknown":
                row["unknown"] = 1.0
            return row
    if as_object:
        return dict(zip(names, values, strict=False))
    return values


def _valid_value(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.type == "category":
        return st.sampled_from(feature.categories)
    if feature.type == "bool":
        return st.booleans()
    low = -1e6 if feature.min is None else feature.min
    high = 1e6 if feature.max is None else feature.max
    integers = st.integers(math.ceil(low), math.floor(high))
    if feature.type == "int":
        return st.one_of(integers, integers.map(float))
    return st.one_of(integers, st.floats(low, high))


def _typed_value(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.type == "category":
        return st.sampled_from([*feature.categories, "other"])
    if feature.type == "bool":
        return st.booleans()
    return NUMBERS


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, list[Any]]:
    name = draw(st.sampled_from(sorted(MANIFESTS)))
    manifest = MANIFESTS[name]
    regular = draw(st.integers(0, 4)) > 0
    # Rows of one batch are usually all lists or all objects; sometimes mixed.
    as_object = draw(st.sampled_from([True, False, None]))
    if as_object is None:
        row = st.booleans().flatmap(lambda flag: rows_for(manifest, regular=regular, as_object=flag))
    else:
        row = rows_for(manifest, regular=regular, as_object=as_object)
    rows = draw(st.lists(row, min_size=1, max_size=6))
    return name, rows


def outcome(validate: Any, rows: Any) -> tuple[str, Any, Any]:
    try:
        matrix = validate(rows)
    except InvalidInput as error:
        return "refused", str(error), error.errors
    return "accepted", matrix.dtype, [[(type(value), value) for value in row] for row in matrix.tolist()]


def same(left: tuple[str, Any, Any], right: tuple[str, Any, Any]) -> bool:
    # NaN never passes validation, so plain equality of the typed values suffices.
    return left == right


PROPERTY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(batch=batches())
@example(batch=("numbers", [[1.0, 3, 2**53 + 1, -0.0]]))
@example(batch=("numbers", [[1.0, 3.0, 2**60 + 1, 7]]))
@example(batch=("mixed", [{"size": 1.0, "count": -0.0, "plan": "pro", "active": True}]))
@example(batch=("flags", [[True, 3], [1, 3]]))
@example(batch=("single", [[1.0], {"only": 1.5}]))
def test_batches_get_the_schemas_verdict(batch: tuple[str, list[Any]]) -> None:
    name, rows = batch
    validator = VALIDATORS[name]
    assert same(
        outcome(validator.validate_many, rows), outcome(lambda rows: exactly(validator.rules, rows), rows)
    )


@PROPERTY
@given(batch=batches())
def test_single_rows_get_the_schemas_verdict(batch: tuple[str, list[Any]]) -> None:
    name, rows = batch
    validator = VALIDATORS[name]
    row = rows[0]
    fast = outcome(validator.validate_one, row)
    try:
        values, errors = exact_row(validator.rules, row)
    except Exception as error:  # pragma: no cover - the schema path never raises
        pytest.fail(f"schema path raised {error!r}")
    if errors:
        assert fast[0] == "refused" and fast[2] == errors
    else:
        expected = validator.rules.assemble_rows([values])
        assert fast == ("accepted", expected.dtype, [[(type(v), v) for v in r] for r in expected.tolist()])


@given(batch=batches())
@PROPERTY
def test_no_row_passes_that_the_schema_refuses(batch: tuple[str, list[Any]]) -> None:
    """Stronger than equal verdicts: judged partially, each row that passes, the schema passes on its own."""
    name, rows = batch
    rules = VALIDATORS[name].rules
    checked = check_rows(rules, rows, strict=False)
    for index, row in enumerate(rows):
        assert bool(checked.valid[index]) == (exact_row(rules, row)[1] == {}), (index, row)


def test_a_regular_valid_batch_takes_the_vectorised_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is really taken for the shapes that matter (else the properties hold trivially)."""

    def no_exact_rules(*args: Any) -> Any:
        raise AssertionError("the exact rules were asked")

    monkeypatch.setattr(json_rows, "exact_row", no_exact_rules)
    floats = VALIDATORS["floats"]
    rows = [[0.5, 1.0], [2.5, 0.0], [-1.5, 1e300]]
    matrix = floats.validate_many(rows)
    assert matrix.dtype == np.float64 and matrix.tolist() == rows
    as_objects = [{"b": b, "a": a} for a, b in rows]
    assert floats.validate_many(as_objects).tolist() == rows
    mixed = VALIDATORS["mixed"].validate_many([[1.0, 2, "pro", True], [0, 5.0, "basic", False]])
    assert mixed.dtype == object
    assert mixed.tolist() == [[1.0, 2, "pro", True], [0.0, 5, "basic", False]]
    assert [type(value) for value in mixed[1]] == [float, int, str, bool]


def test_only_the_bad_rows_are_named() -> None:
    checked = check_rows(VALIDATORS["floats"].rules, [[0.5, 1.0], [3.0, 1.0], [0.0, -1.0], [1.0, math.nan]])
    assert checked.matrix is None and sorted(checked.errors) == [1, 2, 3]
    with pytest.raises(InvalidInput) as caught:
        VALIDATORS["floats"].validate_many([[0.5, 1.0], [3.0, 1.0], [0.0, -1.0]])
    assert caught.value.errors == {
        "1": {"a": ["Must be greater than or equal to -1.5 and less than or equal to 2.5."]},
        "2": {"b": ["Must be greater than or equal to 0.0."]},
    }


def read_body(text: str) -> Any:
    """The body reader's verdict on ``text`` sent as a JSON request."""
    with Flask(__name__).test_request_context(data=text.encode(), content_type="application/json"):
        return read_json(request)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


@PROPERTY
@given(batch=batches())
@example(batch=("floats", [[1.0, [2.0]], [0.5, 1.0]]))
@example(batch=("floats", [[[1.0], [2.0]], [[0.5], [1.0]]]))
@example(batch=("floats", [[1.0, {"a": 1}]]))
@example(batch=("numbers", [[1.0, 3, 2**53 + 1, 7]]))
def test_a_body_of_numbers_only_gets_the_same_verdict(batch: tuple[str, list[Any]]) -> None:
    """The body's text may show that its values are all numbers, so that no row's values are
    type-checked one by one: the verdict must be the same as with the check."""
    name, rows = batch
    rules = VALIDATORS[name].rules
    body = read_body(json.dumps({"instances": rows}))
    if body.numbers_only:
        assert all(type(leaf) in (int, float) for leaf in leaves(body.document))
    rows = body.document["instances"]
    told = JsonRows(rows, numbers_only=body.numbers_only).check(rules, strict=False)
    checked = check_rows(rules, rows, strict=False)
    assert told.valid.tolist() == checked.valid.tolist()
    assert told.errors == checked.errors
    if checked.matrix is not None:
        assert told.matrix is not None and told.matrix.dtype == checked.matrix.dtype
        assert told.matrix.tolist() == checked.matrix.tolist()


@pytest.mark.parametrize(
    ("text", "numbers_only"),
    [
        ('{"instances": [[1.5, 2], [3e2, -4]]}', True),
        ('{"instances": [{"a": 1.5, "b": 2}]}', True),
        ('{"instances": [[1.5, "2"]]}', False),
        ('{"instances": [[1.5, true]]}', False),
        ('{"instances": [[1.5, null]]}', False),
        ('{"instances": [[1.5, false]]}', False),
        # Keys holding the letters of the literals, with and without a literal among the values.
        ('{"features": [1.5, 2]}', True),
        ('{"petal_length": 1.5, "full": 2}', True),
        ('{"petal_length": 1.5, "full": false}', False),
        ('{"features": [1.5, true]}', False),
        ('{"instances": [{"a": 1.5, "b\\"": 2}]}', False),
        ('{"inst:ances": [[1.5, 2]]}', False),
        ('{"instances": [[NaN, 2]]}', False),
    ],
)
def test_the_body_text_shows_numbers_only_when_it_holds_nothing_else(text: str, numbers_only: bool) -> None:
    assert read_body(text).numbers_only is numbers_only
