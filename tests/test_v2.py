"""The Open Inference Protocol over HTTP (``/v2``), through Flask's test client: health, metadata,
inference in JSON and with binary tensors, and every malformed tensor answered {"error": ...}."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.app import create_app
from service.config import ConfigError, Settings
from service.keyring import add_client
from tests.datasets import add_penguins
from tests.helpers import MIXED_MODEL, SETOSA, VIRGINICA, corrupt

IRIS_ROWS = [list(SETOSA.values()), list(VIRGINICA.values()), [5.9, 3.0, 4.2, 1.5]]
HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def penguins_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The penguin pipeline: nullable numbers (imputed) and categories, sex's missing value one of them."""
    root = tmp_path_factory.mktemp("v2_penguins")
    add_penguins(create_app(Settings(model_store=root)), tmp_path_factory.mktemp("v2_penguin_files"))
    return root


def v1_batch(client: FlaskClient, model: str, rows: list[Any]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model}/predict/batch", json=rows)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def infer(client: FlaskClient, model: str, body: dict[str, Any], **kwargs: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json=body, **kwargs)


def matrix_request(rows: list[list[Any]], datatype: str = "FP64", name: str = "input") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": rows}]
    }


def outputs(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in answer["outputs"]}


def binary_body(
    tensors: list[tuple[str, str, list[int], bytes]], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A request of the binary tensor extension: the JSON, then each tensor's bytes."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
                for name, datatype, shape, raw in tensors
            ],
            **extra,
        }
    ).encode()
    return head + b"".join(raw for *_, raw in tensors), {HEADER_LENGTH: str(len(head))}


def binary_outputs(response: Any) -> dict[str, np.ndarray]:
    """Each output of a binary answer, read as the extension says (little-endian; BYTES length-prefixed)."""
    length = int(response.headers[HEADER_LENGTH])
    head = json.loads(response.data[:length])
    found, offset = {}, length
    for item in head["outputs"]:
        if "data" in item:  # this one was written in the JSON
            continue
        size = item["parameters"]["binary_data_size"]
        raw = response.data[offset : offset + size]
        offset += size
        if item["datatype"] == "BYTES":
            values, at = [], 0
            while at < len(raw):
                (n,) = struct.unpack_from("<I", raw, at)
                values.append(raw[at + 4 : at + 4 + n].decode())
                at += 4 + n
            array = np.array(values, dtype=object)
        else:
            array = np.frombuffer(raw, dtype={"FP64": "<f8", "INT64": "<i8"}[item["datatype"]])
        found[item["name"]] = array.reshape(item["shape"])
    assert offset == len(response.data)
    return found


def strings(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(value.encode())) + value.encode() for value in values)


# --- Health and metadata ----------------------------------------------------------------------


def test_server_metadata_and_health(client: FlaskClient) -> None:
    metadata = client.get("/v2")
    assert metadata.status_code == 200
    assert metadata.get_json() == {
        "name": "sklearn-model-service",
        "version": metadata.get_json()["version"],
        "extensions": ["binary_tensor_data"],
    }
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris/ready",
        "/v2/models/iris/versions/1/ready",
    ):
        response = client.get(path)
        assert (response.status_code, response.data) == (200, b""), path


def test_model_metadata_describes_the_tensors_it_takes_and_gives(client: FlaskClient) -> None:
    iris = client.get("/v2/models/iris").get_json()
    assert iris == {
        "name": "iris",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    assert client.get("/v2/models/iris/versions/1").get_json() == iris
    diabetes = client.get("/v2/models/diabetes").get_json()
    assert diabetes["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 10]}]
    assert diabetes["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]


def test_a_model_with_a_category_takes_one_tensor_per_feature(
    make_app: Callable[..., Flask], mixed_store_path: Path
) -> None:
    client = make_app(model_store=mixed_store_path).test_client()
    metadata = client.get(f"/v2/models/{MIXED_MODEL}").get_json()
    assert metadata["inputs"] == [
        {"name": "size", "datatype": "FP64", "shape": [-1]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
        {"name": "colour", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"][0] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/models/nope", 404),
        ("/v2/models/nope/ready", 404),
        ("/v2/models/iris/versions/7", 404),
        ("/v2/models/iris/versions/7/ready", 404),
        ("/v2/models/iris/nothing", 404),
        ("/v2/nothing", 404),
    ],
)
def test_what_is_not_served_is_a_404_error_object(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert list(response.get_json()) == ["error"]


def test_a_model_that_failed_to_load_is_not_ready(make_app: Callable[..., Flask], store_path: Path) -> None:
    corrupt(store_path / "iris" / "1" / "model.joblib")
    client = make_app(model_store=store_path).test_client()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 400  # the protocol's "false" is a 4xx
    assert client.get("/v2/models/iris/ready").status_code == 400
    assert client.get("/v2/models/diabetes/ready").status_code == 200
    metadata = client.get("/v2/models/iris")
    assert metadata.status_code == 503
    assert "SHA-256" in metadata.get_json()["error"] or "hash" in metadata.get_json()["error"]
    refused = infer(client, "iris", matrix_request(IRIS_ROWS))
    assert refused.status_code == 503
    assert list(refused.get_json()) == ["error"]


# --- Inference --------------------------------------------------------------------------------


def test_json_inference_answers_as_v1_does(client: FlaskClient) -> None:
    body = {"id": "request-7", **matrix_request(IRIS_ROWS)}
    response = infer(client, "iris", body)
    assert response.status_code == 200
    assert response.headers["X-Model-Runtime"] == "sklearn"
    answer = response.get_json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("iris", "1", "request-7")
    v1 = v1_batch(client, "iris", IRIS_ROWS)
    found = outputs(answer)
    assert found["predict"] == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [3],
        "data": v1["predictions"],
    }
    classes = list(v1["probabilities"][0])
    assert found["predict_proba"]["shape"] == [3, 3]
    expected = [probability[label] for probability in v1["probabilities"] for label in classes]
    assert found["predict_proba"]["data"] == expected


@pytest.mark.parametrize("model", ["diabetes", "breast_cancer"])
def test_every_demo_model_answers_as_v1_does(client: FlaskClient, model: str) -> None:
    features = [feature["name"] for feature in client.get(f"/v1/models/{model}").get_json()["features"]]
    typical = client.get(f"/v1/models/{model}").get_json()["features"]
    row = [feature.get("typical", 0) for feature in typical]
    rows = [row, [value * 1.01 if isinstance(value, float) else value for value in row]]
    answer = infer(client, model, matrix_request(rows)).get_json()
    v1 = v1_batch(client, model, [dict(zip(features, r, strict=True)) for r in rows])
    assert outputs(answer)["predict"]["data"] == v1["predictions"]


def test_nested_and_flat_data_are_the_same_tensor(client: FlaskClient) -> None:
    nested = infer(client, "iris", matrix_request(IRIS_ROWS)).get_json()
    flat_body = matrix_request(IRIS_ROWS)
    flat_body["inputs"][0]["data"] = [value for row in IRIS_ROWS for value in row]
    assert infer(client, "iris", flat_body).get_json() == nested


def test_outputs_chooses_what_comes_back(client: FlaskClient) -> None:
    body = {**matrix_request(IRIS_ROWS), "outputs": [{"name": "predict_proba"}]}
    answer = infer(client, "iris", body).get_json()
    assert [item["name"] for item in answer["outputs"]] == ["predict_proba"]
    unknown = infer(client, "iris", {**matrix_request(IRIS_ROWS), "outputs": [{"name": "nope"}]})
    assert unknown.status_code == 400
    assert "predict, predict_proba" in unknown.get_json()["error"]


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"), ("INT64", "<i8")]
)
def test_binary_tensors_in_and_out(client: FlaskClient, datatype: str, dtype: str) -> None:
    rows = np.array([[5, 3, 1, 0], [7, 3, 5, 2]], dtype=dtype)
    body, headers = binary_body(
        [("input", datatype, [2, 4], rows.tobytes())], parameters={"binary_data_output": True}
    )
    response = client.post("/v2/models/iris/infer", data=body, headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/octet-stream"
    found = binary_outputs(response)
    v1 = v1_batch(client, "iris", rows.tolist())
    assert found["predict"].tolist() == v1["predictions"]
    assert found["predict_proba"].tolist() == [list(p.values()) for p in v1["probabilities"]]


def test_one_output_in_bytes_the_other_in_json(client: FlaskClient) -> None:
    rows = np.array(IRIS_ROWS)
    body, headers = binary_body(
        [("input", "FP64", [3, 4], rows.tobytes())],
        outputs=[{"name": "predict"}, {"name": "predict_proba", "parameters": {"binary_data": True}}],
    )
    response = client.post("/v2/models/iris/infer", data=body, headers=headers)
    head = json.loads(response.data[: int(response.headers[HEADER_LENGTH])])
    predict, proba = head["outputs"]
    assert predict["data"] == v1_batch(client, "iris", IRIS_ROWS)["predictions"]
    assert proba["parameters"] == {"binary_data_size": 3 * 3 * 8}
    assert binary_outputs(response)["predict_proba"].shape == (3, 3)


def test_one_tensor_per_feature_with_strings_and_booleans(
    make_app: Callable[..., Flask], mixed_store_path: Path
) -> None:
    client = make_app(model_store=mixed_store_path).test_client()
    named = [
        {"size": 2.5, "count": 3, "flag": False, "colour": "red"},
        {"size": 9.0, "count": 18, "flag": True, "colour": "blue"},
    ]
    v1 = v1_batch(client, MIXED_MODEL, named)

    def column(name: str) -> list[Any]:
        return [row[name] for row in named]

    json_body = {
        "inputs": [
            {"name": "colour", "datatype": "BYTES", "shape": [2], "data": column("colour")},
            {"name": "size", "datatype": "FP32", "shape": [2, 1], "data": column("size")},
            {"name": "count", "datatype": "INT64", "shape": [2], "data": column("count")},
            {"name": "flag", "datatype": "BOOL", "shape": [2], "data": column("flag")},
        ]
    }
    answer = infer(client, MIXED_MODEL, json_body).get_json()
    assert outputs(answer)["predict"]["data"] == v1["predictions"]

    body, headers = binary_body(
        [
            ("size", "FP64", [2], np.array(column("size")).tobytes()),
            ("count", "INT32", [2], np.array(column("count"), dtype="<i4").tobytes()),
            ("flag", "BOOL", [2], np.array(column("flag")).tobytes()),
            ("colour", "BYTES", [2], strings(column("colour"))),
        ],
        parameters={"binary_data_output": True},
    )
    response = client.post(f"/v2/models/{MIXED_MODEL}/infer", data=body, headers=headers)
    assert binary_outputs(response)["predict"].tolist() == v1["predictions"]
    # Numbers 0 and 1 are a boolean feature's false and true.
    as_numbers = json.loads(json.dumps(json_body))
    as_numbers["inputs"][3] = {"name": "flag", "datatype": "INT64", "shape": [2], "data": [0, 1]}
    assert infer(client, MIXED_MODEL, as_numbers).get_json() == answer


def test_missing_values_of_nullable_features(make_app: Callable[..., Flask], penguins_store: Path) -> None:
    client = make_app(model_store=penguins_store).test_client()
    named = {"bill_length_mm": 39.1, "bill_depth_mm": None, "flipper_length_mm": 181.0,
             "body_mass_g": None, "island": "Torgersen", "sex": None}  # fmt: skip
    v1 = v1_batch(client, "penguins", [named])
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [1], "data": [math.nan if value is None else value]}
        for name, value in named.items()
        if name not in ("island", "sex", "body_mass_g")  # a nullable feature's tensor may be left out
    ]
    inputs.append({"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Torgersen"]})
    inputs.append({"name": "sex", "datatype": "BYTES", "shape": [1], "data": [None]})
    body, headers = binary_body(
        [(item["name"], "FP64", [1], np.array(item["data"], dtype="<f8").tobytes()) for item in inputs[:3]]
    )
    head = json.loads(body[: int(headers[HEADER_LENGTH])])
    head["inputs"] += inputs[3:]
    head_bytes = json.dumps(head).encode()
    response = client.post(
        "/v2/models/penguins/infer",
        data=head_bytes + body[int(headers[HEADER_LENGTH]) :],
        headers={HEADER_LENGTH: str(len(head_bytes))},
    )
    assert response.status_code == 200, response.data
    assert outputs(response.get_json())["predict"]["data"] == v1["predictions"]


def test_values_outside_the_training_range_are_answered_with_warnings(client: FlaskClient) -> None:
    answer = infer(client, "iris", matrix_request([[5.1, 3.5, 1.4, 40.0]])).get_json()
    warnings = json.loads(answer["parameters"]["warnings"])
    assert list(warnings) == ["0"]
    assert "petal_width" in warnings["0"]


def test_a_v2_prediction_is_counted_like_any_other(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    infer(client, "iris", matrix_request(IRIS_ROWS))
    scraped = client.get("/metrics").get_data(as_text=True)
    assert 'sklearn_service_predictions_total{model="iris",outcome="success",version="1"} 3.0' in scraped
    assert 'route="/v2/models/<name>/infer"' in scraped


# --- Errors ---------------------------------------------------------------------------------------


def _tensor(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    tensor.update(changes)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_tensor(shape=[1, 3], data=[1, 2, 3]), 400, "this model takes [N, 4]"),
        (_tensor(shape=[4]), 400, "this model takes [N, 4]"),
        (_tensor(shape=[2, 4]), 400, "holds 8 elements, but its data has 4"),
        (_tensor(datatype="BYTES", data=["a", "b", "c", "d"]), 400, "takes a number datatype"),
        (_tensor(datatype="FP128"), 400, "datatype"),
        (_tensor(datatype="INT64"), 400, "its elements are integers, not 5.1"),
        (_tensor(data=[5.1, 3.5, 1.4, "0.2"]), 400, "its elements are numbers"),
        (_tensor(data=[5.1, 3.5, 1.4, True]), 400, "its elements are numbers"),
        (_tensor(data={"a": 1}), 400, "must be a list"),
        (_tensor(shape=[1, -4]), 400, "Must be greater than or equal to 0"),
        (_tensor(shape=[1.0, 4]), 400, "shape"),
        (_tensor(datatype="FP16", data=[1, 2, 3, 70000]), 400, "an element does not fit in FP16"),
        (_tensor(datatype="UINT8", data=[1, 2, 3, -1]), 400, "an element does not fit in UINT8"),
        (_tensor(shape=[1, 10**4000, 10**4000]), 400, "more than 281474976710656 elements"),
        (_tensor(data=[1e999, 3.5, 1.4, 0.2]), 400, "sepal_length"),
        (_tensor(name="sepal_length", shape=[1], data=[5.1]), 400, "'sepal_width' is missing"),
        ({"inputs": []}, 400, "inputs"),
        ({}, 400, "inputs: Missing data for required field"),
        ({"inputs": [], "extra": 1}, 400, "extra: Unknown field"),
        (
            {"inputs": [_tensor()["inputs"][0], _tensor()["inputs"][0]]},
            400,
            "more than one input named 'input'",
        ),
        (
            {**_tensor(), "outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}]},
            400,
            "true or false",
        ),
        ({**_tensor(), "parameters": {"nested": {"a": 1}}}, 400, "string, a number or a boolean"),
        (_tensor(data=[math.nan, 3.5, 1.4, 0.2]), 400, "sepal_length"),
    ],
)
def test_malformed_tensors_are_a_400_error_object(
    client: FlaskClient, body: dict[str, Any], status: int, words: str
) -> None:
    response = infer(client, "iris", body)
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    answer = response.get_json()
    assert list(answer) == ["error"]
    assert words in answer["error"]


def test_invalid_values_are_named_by_row_and_feature(client: FlaskClient) -> None:
    body = matrix_request([[5.1, 3.5, 1.4, 0.2], [5.1, math.inf, 1.4, 0.2]])
    answer = infer(client, "iris", body).get_json()
    assert answer["error"].startswith("1 of 2 rows are invalid")
    faults = json.loads(answer["error"][answer["error"].index("{") :])
    assert list(faults) == ["1"] and list(faults["1"]) == ["sepal_width"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda raw, head: (head + raw[:-1], len(head)), "only 31 bytes are left"),
        (lambda raw, head: (head + raw + b"x", len(head)), "1 bytes follow the JSON"),
        (lambda raw, head: (head + raw, len(head) + 99), "Inference-Header-Content-Length"),
        (lambda raw, head: (head + raw, len(head) - 1), "not valid JSON"),
    ],
)
def test_binary_bodies_that_do_not_add_up(client: FlaskClient, make: Any, words: str) -> None:
    raw = np.array([[5.1, 3.5, 1.4, 0.2]]).tobytes()
    body, headers = binary_body([("input", "FP64", [1, 4], raw)])
    head = body[: int(headers[HEADER_LENGTH])]
    data, length = make(raw, head)
    response = client.post("/v2/models/iris/infer", data=data, headers={HEADER_LENGTH: str(length)})
    assert response.status_code == 400, response.data
    assert words in response.get_json()["error"]


@pytest.mark.parametrize("length", ["²", "9" * 5000, "-1", "1e3", ""])
def test_a_header_length_that_is_not_a_byte_count(client: FlaskClient, length: str) -> None:
    body = json.dumps(matrix_request(IRIS_ROWS)).encode()
    response = client.post(
        "/v2/models/iris/infer", data=body, headers={HEADER_LENGTH: length.encode("latin-1")}
    )
    assert response.status_code == 400, response.data
    assert HEADER_LENGTH in response.get_json()["error"]


def test_bytes_elements_that_do_not_add_up(make_app: Callable[..., Flask], mixed_store_path: Path) -> None:
    client = make_app(model_store=mixed_store_path).test_client()
    for raw, words in [
        (strings(["red"])[:-1], "runs past the end"),
        (strings(["red", "blue"]), "bytes are left after its 1 elements"),
        (struct.pack("<I", 2) + b"\xff\xfe", "not UTF-8"),
    ]:
        body, headers = binary_body([("colour", "BYTES", [1], raw)])
        response = client.post(f"/v2/models/{MIXED_MODEL}/infer", data=body, headers=headers)
        assert response.status_code == 400
        assert words in response.get_json()["error"]


def test_requests_the_service_refuses_before_reading_tensors(client: FlaskClient, app: Flask) -> None:
    body = json.dumps(matrix_request(IRIS_ROWS))
    assert client.post("/v2/models/iris/infer", data=body, content_type="text/csv").status_code == 415
    assert client.post("/v2/models/iris/infer", data="{", content_type="application/json").status_code == 400
    assert client.post("/v2/models/iris/infer", data="").status_code == 400
    assert client.put("/v2/models/iris/infer", json={}).status_code == 405
    assert infer(client, "nope", matrix_request(IRIS_ROWS)).status_code == 404
    assert client.post("/v2/models/iris/versions/9/infer", json=matrix_request(IRIS_ROWS)).status_code == 404
    too_big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    assert (
        client.post("/v2/models/iris/infer", data=too_big, content_type="application/json").status_code == 413
    )
    for response in (
        client.post("/v2/models/iris/infer", data=body, content_type="text/csv"),
        client.post("/v2/models/iris/infer", data=too_big, content_type="application/json"),
        client.put("/v2/models/iris/infer", json={}),
    ):
        assert response.mimetype == "application/json" and list(response.get_json()) == ["error"]


def test_too_many_rows(make_app: Callable[..., Flask], demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_batch_rows=2).test_client()
    response = infer(client, "iris", matrix_request(IRIS_ROWS))
    assert response.status_code == 413
    assert "at most 2" in response.get_json()["error"]


def test_api_keys_guard_v2_as_they_guard_v1(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    iris_key = add_client(keys, "iris-app", ["iris"])
    client = make_app(model_store=demo_store_path, api_keys_file=keys).test_client()
    assert client.get("/v2/health/live").status_code == 200  # a probe: open
    assert client.get("/v2/health/ready").status_code == 200
    refused = infer(client, "iris", matrix_request(IRIS_ROWS))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    assert list(refused.get_json()) == ["error"]
    assert client.get("/v2/models/iris", headers={"X-API-Key": iris_key}).status_code == 200
    assert (
        infer(client, "iris", matrix_request(IRIS_ROWS), headers={"X-API-Key": iris_key}).status_code == 200
    )
    other = infer(client, "diabetes", matrix_request([[0] * 10]), headers={"X-API-Key": iris_key})
    assert other.status_code == 403


def test_the_openapi_document_describes_v2(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    infer_route = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer_route["tags"] == ["v2"]
    assert infer_route["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/V2Error"
    }
    assert "422" not in infer_route["responses"]
    assert "content" not in document["paths"]["/v2/health/live"]["get"]["responses"]["200"]


def test_the_grpc_port_is_not_the_http_port() -> None:
    assert Settings.from_env({"SERVICE_GRPC_PORT": "8001"}).grpc_bind == "127.0.0.1:8001"
    assert Settings.from_env({}).grpc_bind is None
    with pytest.raises(ConfigError, match="SERVICE_GRPC_PORT=8000 is the HTTP port"):
        Settings.from_env({"PORT": "8000", "SERVICE_GRPC_PORT": "8000"})
