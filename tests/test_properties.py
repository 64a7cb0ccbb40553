"""Properties of the validation layer, over arbitrary JSON: what the examples in
``test_rules.py`` and ``test_api.py`` show for chosen values, checked here for
values hypothesis picks.

- Arbitrary JSON for each feature type never produces a 5xx.
- Every accepted row yields a prediction (one per row sent).
- Every rejected row names its bad field, and only what is bad (or was sent).

Which values a feature accepts is decided by an oracle written here in plain
Python from the manifest rules of ``model_store/README.md`` (a JSON number that
is not a boolean, finite, within ``min``/``max``; an integer is an int or an
integral float; a category is one of its strings; a bool is ``true``/``false``),
independently of the marshmallow fields that implement them.

The tests at the end reproduce bugs these properties found (since fixed).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.config import Settings
from service.errors import ROW_ERROR_KEY, InvalidInput
from service.models.manifest import Feature, Manifest
from tests.rows import JsonValidator, manifest_of, with_features

# Settings per test rather than a loaded profile, so other modules keep theirs.
# No example database, so no examples are saved in the repository (hypothesis's
# pytest plugin still caches constants under .hypothesis/, which git-ignores
# itself). No deadline: a loaded CI machine must not turn slowness into failure.
# The counts keep the module to about 15 s on two cores.
BASE = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNIT = settings(BASE, max_examples=75)  # per (manifest, feature) pair
ROWS = settings(BASE, max_examples=150)
HTTP = settings(BASE, max_examples=120)

PROBLEM = "application/problem+json"
MISSING = object()  # a feature left out of a row

# --- Arbitrary JSON ----------------------------------------------------------------

LARGEST_FLOAT_INT = int(sys.float_info.max)
HUGE_INTEGERS = st.sampled_from(
    [
        10**400,
        -(10**400),
        2**1024,
        -(2**1024),
        LARGEST_FLOAT_INT,  # still a float
        LARGEST_FLOAT_INT + 2**970,  # rounds up past the largest float
        2**53 + 1,
        2**63,
        -(2**63) - 1,
    ]
)
# Lone surrogates included: they survive json.dumps (escaped) and reach the service.
JSON_TEXT = st.text(st.characters(exclude_categories=()), max_size=10)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTEGERS,
    st.floats(),  # nan, inf, -inf, -0.0, subnormals
    JSON_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(JSON_TEXT, children, max_size=4),
    max_leaves=12,
)


# --- The oracle ------------------------------------------------------------------


def accepts(feature: Feature, value: Any) -> bool:
    """Whether ``value`` is valid for ``feature``, from the manifest's rules alone."""
    if feature.type == "bool":
        return value is True or value is False
    if feature.type == "category":
        return isinstance(value, str) and value in (feature.categories or ())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        as_float = float(value)
    except OverflowError:  # an integer beyond any float: not a usable number
        return False
    if not math.isfinite(as_float):
        return False
    if feature.type == "int":
        if not as_float.is_integer():
            return False
        number: float | int = int(value)
    else:
        number = as_float
    return (feature.min is None or number >= feature.min) and (feature.max is None or number <= feature.max)


def converted(feature: Feature, value: Any) -> Any:
    """What an accepted value becomes in the matrix (before any float64 cast)."""
    if feature.type == "float":
        return float(value)
    if feature.type == "int":
        return int(value)
    return value


def row_errors(manifest: Manifest, row: Any) -> set[str]:
    """The fields a rejected row must name; empty for a valid row."""
    names = manifest.feature_names
    if isinstance(row, list):
        if len(row) != len(names):
            return {ROW_ERROR_KEY}
        row = dict(zip(names, row, strict=True))
    elif not isinstance(row, dict):
        return {ROW_ERROR_KEY}
    unknown = {key for key in row if key not in names}
    bad = {f.name for f in manifest.features if f.name not in row or not accepts(f, row[f.name])}
    return unknown | bad


def as_mapping(manifest: Manifest, row: list[Any] | dict[str, Any]) -> dict[str, Any]:
    return dict(zip(manifest.feature_names, row, strict=True)) if isinstance(row, list) else row


# --- Values and rows near a manifest ---------------------------------------------


# Strategies are built once per feature or manifest: building them afresh for
# every example costs more than drawing from them.


@functools.cache
def valid_values(feature: Feature) -> st.SearchStrategy[Any]:
    if feature.type == "bool":
        return st.booleans()
    if feature.type == "category":
        return st.sampled_from(feature.categories or ())
    low = -(10**6) if feature.min is None else math.ceil(feature.min)
    high = 10**6 if feature.max is None else math.floor(feature.max)
    integers = st.integers(low, high)
    if feature.type == "int":
        return integers | integers.map(float)
    floats = st.floats(feature.min, feature.max, allow_nan=False, allow_infinity=False)
    return floats | integers


@functools.cache
def near_values(feature: Feature) -> st.SearchStrategy[Any]:
    """Values just inside or just outside the feature's rules, and the usual impostors."""
    impostors: list[Any] = [None, "", [], {}]
    if feature.type == "bool":
        return st.sampled_from([*impostors, 0, 1, 0.0, "true", "false", "True", [True], {"value": True}])
    if feature.type == "category":
        categories = list(feature.categories or ())
        return st.sampled_from(
            [
                *impostors,
                *categories,
                *(c.upper() for c in categories),
                *(f" {c}" for c in categories),
                [categories[0]],
                0,
                True,
            ]
        )
    edges: list[Any] = [*impostors, 0, -0.0, 0.5, -1, True, False, "1", "1.0", math.nan, math.inf, -math.inf]
    for bound in (feature.min, feature.max):
        if bound is not None:
            edges += [bound, math.nextafter(bound, math.inf), math.nextafter(bound, -math.inf)]
            edges += [bound + 1, bound - 1, bound + 0.5, bound - 0.5, str(bound), [bound]]
            if float(bound).is_integer():
                edges += [int(bound), int(bound) + 1, int(bound) - 1]
    return st.sampled_from(edges) | st.floats() | st.integers() | HUGE_INTEGERS


@functools.cache
def any_value(feature: Feature) -> st.SearchStrategy[Any]:
    return st.one_of(valid_values(feature), near_values(feature), JSON_VALUES)


@functools.cache
def changed_value(feature: Feature) -> st.SearchStrategy[Any]:
    return st.just(MISSING) | near_values(feature) | JSON_VALUES


UNKNOWN_KEYS = JSON_TEXT | st.sampled_from(["extra", "_row", "_body", "_schema", "features", "instances"])


@st.composite
def _named_rows(draw: st.DrawFn, manifest: Manifest, as_list: bool) -> list[Any] | dict[str, Any]:
    names = manifest.feature_names
    changed = draw(st.sets(st.sampled_from(names), max_size=2))
    values: dict[str, Any] = {}
    for feature in manifest.features:
        value = draw(changed_value(feature) if feature.name in changed else valid_values(feature))
        if value is not MISSING:
            values[feature.name] = value
    unknown = draw(
        st.dictionaries(UNKNOWN_KEYS.filter(lambda key: key not in names), JSON_VALUES, max_size=2)
        if draw(st.booleans())
        else st.just({})
    )
    if as_list and not unknown and len(values) == len(names) and draw(st.booleans()):
        return [values[name] for name in names]
    return {**values, **unknown}


_CACHE: dict[tuple[str, ...], st.SearchStrategy[Any]] = {}


def cached(key: tuple[str, ...], build: Callable[[], st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def named_rows(manifest: Manifest, *, as_list: bool = True) -> st.SearchStrategy[Any]:
    """A row of the manifest's features: a few changed or left out, maybe unknown keys.

    Mostly valid, so that accepted rows are as common as rejected ones.
    """
    key = ("named", manifest.name, manifest.version, str(as_list))
    return cached(key, lambda: _named_rows(manifest, as_list))


def valid_rows(manifest: Manifest) -> st.SearchStrategy[Any]:
    """Rows every value of which is valid, as objects or as lists in manifest order."""

    def build() -> st.SearchStrategy[Any]:
        named = st.fixed_dictionaries({f.name: valid_values(f) for f in manifest.features})
        return named | named.map(lambda row: [row[name] for name in manifest.feature_names])

    return cached(("valid", manifest.name, manifest.version), build)


def any_rows(manifest: Manifest) -> st.SearchStrategy[Any]:
    """Rows of every shape: near-valid named or positional rows, short or long lists, any JSON."""
    n = len(manifest.feature_names)
    return cached(
        ("any", manifest.name, manifest.version),
        lambda: st.one_of(
            valid_rows(manifest),
            named_rows(manifest),
            st.lists(st.floats(-1, 10) | st.integers(-1, 10), min_size=max(0, n - 1), max_size=n + 1),
            JSON_VALUES,
        ),
    )


def batches(manifest: Manifest, *, max_size: int, nulls: bool = True) -> st.SearchStrategy[list[Any]]:
    """Lists of rows, mostly near-valid; with ``nulls=False`` no row is null."""

    def build() -> st.SearchStrategy[list[Any]]:
        row = named_rows(manifest) | any_rows(manifest)
        if not nulls:
            row = row.filter(lambda value: value is not None)
        # Half the batches are wholly valid: a random batch of several rows rarely is.
        return st.lists(valid_rows(manifest), max_size=max_size) | st.lists(row, max_size=max_size)

    return cached(("batch", manifest.name, manifest.version, str(max_size), str(nulls)), build)


# --- Unit level: JsonValidator built from a manifest -------------------------------

MIXED = manifest_of(
    "mixed",
    Feature("size", "float", min=0.0, max=10.0),
    Feature("free", "float"),
    Feature("count", "int", min=1, max=5),
    Feature("plan", "category", categories=("basic", "pro")),
    Feature("active", "bool"),
)
# Without the category the matrix is float64: the other branch of JsonValidator.
NUMERIC = manifest_of("numeric", *MIXED.features[:3], *MIXED.features[4:])
GOOD = {"size": 2.5, "free": -1e300, "count": 3, "plan": "pro", "active": True}
VALIDATORS = {manifest.name: JsonValidator(manifest, "reject") for manifest in (MIXED, NUMERIC)}
CASES = [(manifest.name, feature.name) for manifest in (MIXED, NUMERIC) for feature in manifest.features]


def good_row(manifest: Manifest) -> dict[str, Any]:
    return {name: GOOD[name] for name in manifest.feature_names}


def cell_obeys(feature: Feature, cell: Any, *, numeric: bool) -> bool:
    """The feature's rules, checked on the value that reached the matrix."""
    if feature.type == "category":
        return isinstance(cell, str) and cell in (feature.categories or ())
    if feature.type == "bool":
        return cell in (0.0, 1.0) if numeric else (cell is True or cell is False)
    if not numeric and type(cell) is not {"int": int, "float": float}[feature.type]:
        return False
    number = float(cell)
    return (
        math.isfinite(number)
        and (feature.type == "float" or number.is_integer())
        and (feature.min is None or number >= feature.min)
        and (feature.max is None or number <= feature.max)
    )


def assert_matrix_holds(manifest: Manifest, matrix: np.ndarray, rows: list[Any]) -> None:
    numeric = all(f.type != "category" for f in manifest.features)
    assert matrix.shape == (len(rows), len(manifest.features))
    assert matrix.dtype == (np.float64 if numeric else object)
    for cells, row in zip(matrix.tolist(), rows, strict=True):
        mapping = as_mapping(manifest, row)
        for feature, cell in zip(manifest.features, cells, strict=True):
            assert cell_obeys(feature, cell, numeric=numeric), (feature, cell)
            assert cell == converted(feature, mapping[feature.name]), (feature, cell)


@pytest.mark.parametrize(("manifest_name", "field"), CASES)
@UNIT
@given(data=st.data(), positional=st.booleans())
def test_one_arbitrary_value_is_kept_by_the_rules_or_named_alone(
    manifest_name: str, field: str, data: st.DataObject, positional: bool
) -> None:
    validator = VALIDATORS[manifest_name]
    manifest = validator.manifest
    feature = next(f for f in manifest.features if f.name == field)
    value = data.draw(any_value(feature), label="value")
    row: Any = {**good_row(manifest), field: value}
    if positional:
        row = list(row.values())
    try:
        matrix = validator.validate_one(row)
    except InvalidInput as error:
        event("rejected")
        assert list(error.errors) == [field]
        assert all(isinstance(message, str) and message for message in error.errors[field])
        return
    event("accepted")
    numeric = matrix.dtype == np.float64
    assert matrix.shape == (1, len(manifest.features))
    cells = dict(zip(manifest.feature_names, matrix.tolist()[0], strict=True))
    assert cell_obeys(feature, cells.pop(field), numeric=numeric)
    assert cells == {name: converted(f, GOOD[name]) for f in manifest.features if (name := f.name) != field}


@pytest.mark.parametrize(("manifest_name", "field"), CASES)
@UNIT
@given(data=st.data())
def test_a_value_is_accepted_iff_the_oracle_accepts_it(
    manifest_name: str, field: str, data: st.DataObject
) -> None:
    validator = VALIDATORS[manifest_name]
    feature = next(f for f in validator.manifest.features if f.name == field)
    value = data.draw(any_value(feature), label="value")
    row = {**good_row(validator.manifest), field: value}
    try:
        matrix = validator.validate_one(row)
    except InvalidInput:
        event("rejected")
        assert not accepts(feature, value)
    else:
        event("accepted")
        assert accepts(feature, value)
        assert_matrix_holds(validator.manifest, matrix, [row])


@pytest.mark.parametrize("manifest_name", list(VALIDATORS))
@ROWS
@given(data=st.data())
def test_any_row_is_accepted_or_names_exactly_its_bad_fields(manifest_name: str, data: st.DataObject) -> None:
    validator = VALIDATORS[manifest_name]
    row = data.draw(any_rows(validator.manifest), label="row")
    expected = row_errors(validator.manifest, row)
    try:
        matrix = validator.validate_one(row)
    except InvalidInput as error:
        event("rejected")
        assert set(error.errors) == expected
    else:
        event("accepted")
        assert not expected
        assert_matrix_holds(validator.manifest, matrix, [row])


@pytest.mark.parametrize("manifest_name", list(VALIDATORS))
@ROWS
@given(data=st.data())
def test_a_batch_is_accepted_or_keyed_by_exactly_its_bad_rows(
    manifest_name: str, data: st.DataObject
) -> None:
    validator = VALIDATORS[manifest_name]
    manifest = validator.manifest
    rows = data.draw(batches(manifest, max_size=6), label="rows")
    expected = {str(index): bad for index, row in enumerate(rows) if (bad := row_errors(manifest, row))}
    try:
        matrix = validator.validate_many(rows)
    except InvalidInput as error:
        event(f"rejected: {len(expected)} of {len(rows)} rows")
        assert expected
        assert {key: set(fields) for key, fields in error.errors.items()} == expected
    else:
        event(f"accepted: {len(rows)} rows")
        assert not expected
        assert_matrix_holds(manifest, matrix, rows)


# --- HTTP level: the app from the factory over the demo store ----------------------

# route -> (model, batch route?)
ROUTES = {
    "/predict": ("iris", False),
    "/predict/batch": ("iris", True),
    "/v1/models/iris/predict": ("iris", False),
    "/v1/models/diabetes/predict/batch": ("diabetes", True),
}
IRIS_ROUTES = [route for route, (model, _) in ROUTES.items() if model == "iris"]


@pytest.fixture(scope="module")
def app(demo_store_path: Path) -> Flask:
    """The demo models under the reject range policy: the oracle below holds values to the
    manifest's ranges (tests/test_rules_agree.py covers the default policy)."""
    built = create_app(Settings(model_store=demo_store_path, range_policy="reject"))
    built.config["TESTING"] = True
    return built


@pytest.fixture(scope="module")
def api(app: Flask) -> FlaskClient:
    """One client for every example: hypothesis does not rerun function-scoped fixtures."""
    return app.test_client()


@pytest.fixture(scope="module")
def manifests(app: Flask) -> dict[str, Manifest]:
    registry = app.extensions["service"].registry
    return {name: registry.get(name).manifest for name in ("iris", "diabetes")}


def post(api: FlaskClient, route: str, body: Any) -> Any:
    # json.dumps writes NaN/Infinity for non-finite floats; the service reads them back.
    return api.post(route, data=json.dumps(body), content_type="application/json")


@dataclass(frozen=True)
class Expected:
    """What the service must answer for a body, by the oracle."""

    predictions: int = 0  # accepted: how many rows
    many: bool = False  # answered with "predictions" (a list) rather than "prediction"
    # Rejected: error key -> the fields it must name (a row index), or None (messages).
    errors: dict[str, set[str] | None] | None = None
    # Rejected, with a null row in a batch: only the keys that may appear (see the test below).
    loose: frozenset[str] | None = None


def expect(body: Any, manifest: Manifest, *, batch_route: bool) -> Expected:
    """The answer a body deserves, from the request shapes documented in service/api/payload.py."""
    names = manifest.feature_names
    if isinstance(body, list):
        if not batch_route or not body:
            return Expected(errors={"_body": None})
        return expect_rows(body, manifest, envelope={"_body"}, many=True)
    if not isinstance(body, dict):
        return Expected(errors={"_body": None})
    if "instances" in body and "instances" not in names:
        envelope = {key for key in body if key != "instances"}
        rows = body["instances"]
        if isinstance(rows, list) and any(row is None for row in rows):
            return expect_rows(rows, manifest, envelope=envelope | {"instances"}, many=True)
        if not isinstance(rows, list) or not rows:
            envelope.add("instances")
        if envelope:
            return Expected(errors=dict.fromkeys(envelope))
        return expect_rows(rows, manifest, envelope={"instances"}, many=True)
    if "features" in body and "features" not in names:
        envelope = {key for key in body if key != "features"}
        if not isinstance(body["features"], (dict, list)):
            envelope.add("features")
        if envelope:
            return Expected(errors=dict.fromkeys(envelope))
        body = body["features"]
    return expect_rows([body], manifest, envelope=set(), many=batch_route)


def expect_rows(rows: list[Any], manifest: Manifest, *, envelope: set[str], many: bool) -> Expected:
    if many and any(row is None for row in rows):
        # A null row fails the envelope, not the row: only an upper bound is known (see
        # test_a_null_row_is_named_like_any_other_bad_row).
        indices = {str(index) for index in range(len(rows))}
        return Expected(loose=frozenset(indices | envelope))
    bad = {str(index): fields for index, row in enumerate(rows) if (fields := row_errors(manifest, row))}
    if not bad:
        return Expected(predictions=len(rows), many=many)
    if many:
        return Expected(errors=dict(bad))
    return Expected(errors=dict.fromkeys(bad["0"]))


def sent_names(body: Any, *, batch_route: bool) -> set[str]:
    """Every key and row index the client sent, at the top level and one row down."""
    # On a batch route a single row, bare or in "features", is row 0.
    names: set[str] = {"0"} if batch_route else set()
    containers = [body]
    if isinstance(body, dict):
        containers += [body.get("features"), body.get("instances")]
    for container in containers:
        if isinstance(container, dict):
            names |= set(container)
        elif isinstance(container, list):
            names |= {str(index) for index in range(len(container))}
    return names


def check_answer(response: Any, body: Any, manifest: Manifest, *, batch_route: bool) -> None:
    text = response.get_data(as_text=True)
    event(f"status {response.status_code}")
    assert response.status_code < 500, text
    payload = response.get_json()
    assert isinstance(payload, dict), text
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, text
        assert response.mimetype == PROBLEM
        assert payload["status"] == response.status_code
        assert payload["type"].startswith("/problems/")
        assert isinstance(payload["title"], str) and payload["title"]
        assert isinstance(payload["detail"], str) and payload["detail"]
    if response.status_code == 422:
        # Whatever the oracle says: nothing is named that is neither a feature nor sent.
        errors = payload["errors"]
        assert errors, text
        allowed = {*manifest.feature_names, ROW_ERROR_KEY, "_body"} | sent_names(
            body, batch_route=batch_route
        )
        assert set(errors) <= allowed, text
    expected = expect(body, manifest, batch_route=batch_route)
    if expected.loose is not None:
        assert response.status_code == 422, text
        assert set(payload["errors"]) <= expected.loose, text
    elif expected.errors is not None:
        assert response.status_code == 422, text
        errors = payload["errors"]
        assert set(errors) == set(expected.errors), text
        for key, fields in expected.errors.items():
            if fields is None:
                assert isinstance(errors[key], (list, dict)) and errors[key], text
            else:
                assert isinstance(errors[key], dict) and set(errors[key]) == fields, text
    else:
        assert response.status_code == 200, text
        assert response.mimetype == "application/json"
        check_prediction(payload, manifest, expected)


def check_prediction(payload: dict[str, Any], manifest: Manifest, expected: Expected) -> None:
    assert payload["model"] == manifest.name
    assert payload["model_version"] == manifest.version
    if expected.many:
        assert "prediction" not in payload
        values = payload["predictions"]
        assert isinstance(values, list) and len(values) == expected.predictions
    else:
        assert "predictions" not in payload
        values = [payload["prediction"]]
    if manifest.task == "classification":
        classes = list(manifest.classes or ())
        assert all(value in classes for value in values)
        probabilities = payload["probabilities"] if expected.many else [payload["probabilities"]]
        assert len(probabilities) == len(values)
        for row in probabilities:
            assert set(row) == set(classes) and math.isclose(sum(row.values()), 1.0, abs_tol=1e-9)
    else:
        assert all(isinstance(value, float) and math.isfinite(value) for value in values)


@HTTP
@example(route="/predict/batch", body=[[5.1, 3.5, 1.4, 0.2], {"sepal_length": 5.1}, 7])
@example(route="/predict", body={"sepal_length": 4.0, "sepal_width": 2.0, "instances": [None]})
@given(route=st.sampled_from(list(ROUTES)), body=JSON_VALUES)
def test_any_json_body_is_answered_without_a_5xx(
    api: FlaskClient, manifests: dict[str, Manifest], route: str, body: Any
) -> None:
    model, batch_route = ROUTES[route]
    check_answer(post(api, route, body), body, manifests[model], batch_route=batch_route)


@HTTP
@given(route=st.sampled_from(IRIS_ROUTES), data=st.data())
def test_named_iris_features_are_predicted_or_named(
    api: FlaskClient, manifests: dict[str, Manifest], route: str, data: st.DataObject
) -> None:
    iris = manifests["iris"]
    body = data.draw(named_rows(iris, as_list=False), label="body")
    check_answer(post(api, route, body), body, iris, batch_route=ROUTES[route][1])


ENVELOPE_EXTRAS = UNKNOWN_KEYS.filter(lambda key: key != "instances")


@HTTP
@given(route=st.sampled_from(list(ROUTES)), data=st.data())
def test_every_row_of_a_batch_is_predicted_or_named_by_index(
    api: FlaskClient, manifests: dict[str, Manifest], route: str, data: st.DataObject
) -> None:
    model, batch_route = ROUTES[route]
    manifest = manifests[model]
    # Null rows have their own test below; here every other kind of row.
    rows = data.draw(batches(manifest, max_size=5, nulls=False), label="rows")
    envelopes = [{"instances": rows}]
    if batch_route:
        envelopes.append(rows)
    body = data.draw(st.sampled_from(envelopes), label="envelope")
    if data.draw(st.booleans(), label="unknown envelope key") and isinstance(body, dict):
        body = {**body, data.draw(ENVELOPE_EXTRAS, label="unknown key"): 1}
    check_answer(post(api, route, body), body, manifest, batch_route=batch_route)


def encodings_of_json(value: Any, codec: str, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode(codec, "surrogatepass")


JSON_BYTES = st.builds(
    encodings_of_json,
    JSON_VALUES,
    st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32", "utf-8-sig"]),
    st.booleans(),
)


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A JSON document with some of its bytes cut out and others put in."""
    document = draw(JSON_BYTES)
    start = draw(st.integers(0, len(document)))
    end = draw(st.integers(start, len(document)))
    return document[:start] + draw(st.binary(max_size=8)) + document[end:]


@HTTP
@given(route=st.sampled_from(list(ROUTES)), data=st.one_of(st.binary(max_size=64), JSON_BYTES, spliced()))
def test_any_bytes_sent_as_json_are_answered_without_a_5xx(api: FlaskClient, route: str, data: bytes) -> None:
    response = api.post(route, data=data, content_type="application/json")
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400, 422), response.get_data(as_text=True)
    if response.status_code != 200:
        problem = response.get_json()
        assert response.mimetype == PROBLEM
        assert problem["status"] == response.status_code
        assert problem["type"].startswith("/problems/") and problem["title"] and problem["detail"]


# --- Found by these properties, fixed, and kept as regressions -------------------------

UNBOUNDED_INT = Feature("n", "int")


@pytest.mark.parametrize("with_category", [False, True], ids=["float64-matrix", "object-matrix"])
@UNIT
@example(value=10**400)
@given(value=st.integers() | HUGE_INTEGERS)
def test_an_unbounded_int_feature_refuses_integers_beyond_any_float(with_category: bool, value: int) -> None:
    features = (Feature("x", "float"), UNBOUNDED_INT)
    if with_category:
        features += (Feature("c", "category", categories=("a", "b")),)
    validator = JsonValidator(with_features(MIXED, *features))
    row = {"x": 1.0, "n": value, "c": "a"} if with_category else {"x": 1.0, "n": value}
    try:
        matrix = validator.validate_one(row)
    except InvalidInput as error:
        assert not accepts(UNBOUNDED_INT, value)
        assert list(error.errors) == ["n"]
    else:
        assert accepts(UNBOUNDED_INT, value)
        assert math.isfinite(float(matrix[0, 1]))


@HTTP
@example(route="/predict", digits=4301, negative=False)
@given(route=st.sampled_from(list(ROUTES)), digits=st.integers(4301, 20_000), negative=st.booleans())
def test_an_integer_literal_too_long_for_python_is_not_a_5xx(
    api: FlaskClient, route: str, digits: int, negative: bool
) -> None:
    literal = ("-" if negative else "") + "9" * digits
    data = '{"sepal_length": ' + literal + "}"
    response = api.post(route, data=data, content_type="application/json")
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM


@HTTP
@example(envelope="list", rows=[{"sepal_length": 1.0}, None, 5])
@given(
    envelope=st.sampled_from(["list", "instances"]),
    rows=st.lists(st.none() | JSON_VALUES, min_size=1, max_size=5).filter(lambda rows: None in rows),
)
def test_a_null_row_is_named_like_any_other_bad_row(
    api: FlaskClient, manifests: dict[str, Manifest], envelope: str, rows: list[Any]
) -> None:
    body = rows if envelope == "list" else {"instances": rows}
    response = post(api, "/predict/batch", body)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    iris = manifests["iris"]
    expected = {str(index): bad for index, row in enumerate(rows) if (bad := row_errors(iris, row))}
    assert set(errors) == set(expected)
    for key, fields in expected.items():
        assert isinstance(errors[key], dict) and set(errors[key]) == fields
