"""The Open Inference Protocol on the real server, called by a client someone else wrote: Triton's
``tritonclient``, over HTTP (binary tensors, its default, and pure JSON) and over gRPC, with the same
answers as the v1 routes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from local_gunicorn import free_port
from service.keyring import add_client
from tests.helpers import MIXED_MODEL, corrupt, store_mixed_model
from tests.servers import Server, http, post_json, running_server

DEMO_MODELS = ("breast_cancer", "diabetes", "iris")


@dataclass(frozen=True)
class Served:
    server: Server
    grpc_url: str

    @property
    def http_url(self) -> str:
        return self.server.base_url.removeprefix("http://")


@pytest.fixture(scope="module")
def served(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The demo models and the mixed one, over HTTP and gRPC, two workers."""
    store = tmp_path_factory.mktemp("v2_store") / "store"
    shutil.copytree(demo_store_path, store)
    store_mixed_model(store)
    port = free_port()
    with running_server(store, tmp_path_factory.mktemp("v2_logs"), SERVICE_GRPC_PORT=str(port)) as server:
        yield Served(server, f"127.0.0.1:{port}")


def v1_predictions(served: Served, model: str, rows: list[Any]) -> dict[str, Any]:
    response = post_json(served.server, f"/v1/models/{model}/predict/batch", rows)
    assert response.status_code == 200, response.text
    return response.json()


def typical_rows(served: Served, model: str) -> list[list[Any]]:
    """Three rows near the model's typical one."""
    features = http("GET", served.server.url(f"/v1/models/{model}")).json()["features"]
    typical = [feature["typical"] for feature in features]
    return [
        [value * scale if isinstance(value, float) else value for value in typical]
        for scale in (1.0, 0.9, 1.1)
    ]


def expected_outputs(served: Served, model: str, rows: list[list[Any]]) -> dict[str, np.ndarray]:
    v1 = v1_predictions(served, model, rows)
    found = {"predict": np.array(v1["predictions"])}
    if "probabilities" in v1:
        found["predict_proba"] = np.array([list(row.values()) for row in v1["probabilities"]])
    return found


def assert_same(result: Any, expected: dict[str, np.ndarray]) -> None:
    for name, values in expected.items():
        got = result.as_numpy(name)
        if got.dtype == object:  # BYTES: tritonclient gives bytes (binary) or str (JSON)
            got = np.array([value.decode() if isinstance(value, bytes) else value for value in got])
        assert got.shape == values.shape, name
        assert got.tolist() == values.tolist(), name


# --- HTTP ------------------------------------------------------------------------------------


def test_http_health_and_metadata(served: Served) -> None:
    client = httpclient.InferenceServerClient(url=served.http_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in (*DEMO_MODELS, MIXED_MODEL):
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, model_version="1")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = client.get_model_metadata("iris")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [output["name"] for output in metadata["outputs"]] == ["predict", "predict_proba"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", DEMO_MODELS)
def test_http_infer_answers_as_v1(served: Served, model: str, binary: bool) -> None:
    client = httpclient.InferenceServerClient(url=served.http_url)
    rows = typical_rows(served, model)
    metadata = client.get_model_metadata(model)
    tensor = httpclient.InferInput("input", [len(rows), len(rows[0])], "FP64")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float64), binary_data=binary)
    requested = [
        httpclient.InferRequestedOutput(output["name"], binary_data=binary) for output in metadata["outputs"]
    ]
    result = client.infer(model, [tensor], outputs=requested, request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    assert_same(result, expected_outputs(served, model, rows))
    # No outputs named: the client asks for every output, as bytes.
    assert_same(client.infer(model, [tensor]), expected_outputs(served, model, rows))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_with_one_tensor_per_feature(served: Served, binary: bool) -> None:
    client = httpclient.InferenceServerClient(url=served.http_url)
    columns = {
        "size": np.array([2.5, 9.0]),
        "count": np.array([3, 18], dtype=np.int64),
        "flag": np.array([False, True]),
        "colour": np.array(["red", "blue"], dtype=object),
    }
    inputs = []
    for spec in client.get_model_metadata(MIXED_MODEL)["inputs"]:
        tensor = httpclient.InferInput(spec["name"], [2], spec["datatype"])
        tensor.set_data_from_numpy(columns[spec["name"]], binary_data=binary)
        inputs.append(tensor)
    result = client.infer(MIXED_MODEL, inputs, outputs=[httpclient.InferRequestedOutput("predict", binary)])
    named = [{name: values.tolist()[i] for name, values in columns.items()} for i in range(2)]
    v1 = v1_predictions(served, MIXED_MODEL, named)
    assert_same(result, {"predict": np.array(v1["predictions"])})


@pytest.mark.parametrize(
    ("model", "make", "words"),
    [
        ("iris", lambda: _input("input", np.zeros((1, 3))), "this model takes [N, 4]"),
        ("iris", lambda: _input("input", np.array([["a", "b", "c", "d"]], dtype=object)), "takes a number"),
        (MIXED_MODEL, lambda: _input("size", np.array([2.5])), "Input 'count' is missing"),
        ("iris", lambda: _input("input", np.array([[5.1, np.nan, 1.4, 0.2]])), "sepal_width"),
        ("nope", lambda: _input("input", np.zeros((1, 4))), "No model named 'nope'"),
    ],
)
def test_http_bad_tensors_raise_the_servers_message(
    served: Served, model: str, make: Any, words: str
) -> None:
    client = httpclient.InferenceServerClient(url=served.http_url)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [make()])
    assert words in raised.value.message()
    assert raised.value.status() in ("400", "404")


def _input(name: str, values: np.ndarray) -> httpclient.InferInput:
    datatype = "BYTES" if values.dtype == object else "FP64"
    tensor = httpclient.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


# --- gRPC ------------------------------------------------------------------------------------


def test_grpc_health_and_metadata(served: Served) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    for model in (*DEMO_MODELS, MIXED_MODEL):
        assert client.is_model_ready(model)
    assert client.get_server_metadata(as_json=True)["extensions"] == ["binary_tensor_data"]
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": ["-1", "4"]}]
    assert [output["name"] for output in metadata["outputs"]] == ["predict", "predict_proba"]
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("model", DEMO_MODELS)
def test_grpc_infer_answers_as_v1(served: Served, model: str) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    rows = typical_rows(served, model)
    tensor = grpcclient.InferInput("input", [len(rows), len(rows[0])], "FP64")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float64))  # sent as raw_input_contents
    outputs = [grpcclient.InferRequestedOutput(o.name) for o in client.get_model_metadata(model).outputs]
    result = client.infer(model, [tensor], outputs=outputs, request_id="req-2")
    assert result.get_response().id == "req-2"
    assert_same(result, expected_outputs(served, model, rows))


def test_grpc_infer_with_strings(served: Served) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    columns = {
        "size": np.array([2.5, 9.0]),
        "count": np.array([3, 18], dtype=np.int64),
        "flag": np.array([False, True]),
        "colour": np.array([b"red", b"blue"], dtype=object),
    }
    inputs = []
    for spec in client.get_model_metadata(MIXED_MODEL).inputs:
        tensor = grpcclient.InferInput(spec.name, [2], spec.datatype)
        tensor.set_data_from_numpy(columns[spec.name])
        inputs.append(tensor)
    named = [
        {
            name: (values[i].decode() if isinstance(values[i], bytes) else values[i].item())
            for name, values in columns.items()
        }
        for i in range(2)
    ]
    v1 = v1_predictions(served, MIXED_MODEL, named)
    assert_same(client.infer(MIXED_MODEL, inputs), {"predict": np.array(v1["predictions"])})


@pytest.mark.parametrize(
    ("model", "values", "code", "words"),
    [
        ("iris", np.zeros((1, 3)), "INVALID_ARGUMENT", "this model takes [N, 4]"),
        ("iris", np.array([[b"a", b"b", b"c", b"d"]], dtype=object), "INVALID_ARGUMENT", "takes a number"),
        ("iris", np.array([[5.1, np.inf, 1.4, 0.2]]), "INVALID_ARGUMENT", "sepal_width"),
        ("nope", np.zeros((1, 4)), "NOT_FOUND", "No model named 'nope'"),
    ],
)
def test_grpc_errors_map_to_status_codes(
    served: Served, model: str, values: np.ndarray, code: str, words: str
) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    tensor = grpcclient.InferInput("input", list(values.shape), "BYTES" if values.dtype == object else "FP64")
    tensor.set_data_from_numpy(values)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [tensor])
    assert raised.value.status() == f"StatusCode.{code}"
    assert words in raised.value.message()


def test_grpc_typed_contents_are_answered_in_typed_contents(served: Served) -> None:
    """ModelInfer with the elements in InferTensorContents rather than raw bytes (tritonclient's own
    messages and stub, without its client class, which always sends raw bytes)."""
    rows = typical_rows(served, "iris")
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="1", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=[len(rows), 4])
    tensor.contents.fp64_contents.extend(value for row in rows for value in row)
    with grpc.insecure_channel(served.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=20)
        assert not response.raw_output_contents
        predict, proba = response.outputs
        expected = expected_outputs(served, "iris", rows)
        assert (predict.datatype, list(predict.shape)) == ("BYTES", [3])
        assert [label.decode() for label in predict.contents.bytes_contents] == expected["predict"].tolist()
        assert list(proba.contents.fp64_contents) == expected["predict_proba"].reshape(-1).tolist()
        mixed = service_pb2.ModelInferRequest(model_name=MIXED_MODEL)
        for name, datatype, field, values in [
            ("size", "FP32", "fp32_contents", [2.5]),
            ("count", "INT32", "int_contents", [3]),
            ("flag", "BOOL", "bool_contents", [False]),
            ("colour", "BYTES", "bytes_contents", [b"red"]),
        ]:
            getattr(mixed.inputs.add(name=name, datatype=datatype, shape=[1]).contents, field).extend(values)
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(mixed, timeout=20)
        v1 = v1_predictions(served, MIXED_MODEL, [{"size": 2.5, "count": 3, "flag": False, "colour": "red"}])
        assert [label.decode() for label in answer.outputs[0].contents.bytes_contents] == v1["predictions"]
        mixed.inputs[0].datatype = "FP64"  # its elements are still in fp32_contents
        with pytest.raises(grpc.RpcError) as raised:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(mixed, timeout=20)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            raised.value.details()
            == "Input 'size' is FP64: its elements go in fp64_contents, not fp32_contents."
        )


def test_grpc_messages_and_rows_over_the_limits(served: Served) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    for rows in (200_000, 6_000):  # 6.4 MB, over SERVICE_MAX_BODY_BYTES; rows over SERVICE_MAX_BATCH_ROWS
        tensor = grpcclient.InferInput("input", [rows, 4], "FP64")
        tensor.set_data_from_numpy(np.zeros((rows, 4)))
        with pytest.raises(InferenceServerException) as raised:
            client.infer("iris", [tensor])
        assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "at most 5000 are accepted" in raised.value.message()


def test_grpc_shares_the_logs_metrics_and_processes(served: Served) -> None:
    client = grpcclient.InferenceServerClient(url=served.grpc_url)
    tensor = grpcclient.InferInput("input", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]]))
    client.infer("iris", [tensor], headers={"x-request-id": "grpc-call-7"})
    records = [r for r in served.server.access_log() if r.get("request_id") == "grpc-call-7"]
    assert len(records) == 1
    assert records[0]["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (records[0]["status"], records[0]["model"], records[0]["version"]) == ("OK", "iris", "1")
    scraped = http("GET", served.server.url("/metrics")).text
    assert 'sklearn_service_grpc_requests_total{code="OK",method="ModelInfer"}' in scraped
    # grpcio's threads start in the workers, never in the master that forks them.
    master = served.server.proc.pid
    assert len(os.listdir(f"/proc/{master}/task")) == 1
    assert "cygrpc" not in Path(f"/proc/{master}/maps").read_text()
    assert all("cygrpc" in Path(f"/proc/{pid}/maps").read_text() for pid in served.server.worker_pids())


def test_grpc_keys_and_a_model_that_is_not_ready(demo_store_path: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(demo_store_path, store)
    corrupt(store / "diabetes" / "1" / "model.joblib")
    keys = tmp_path / "keys"
    key = add_client(keys, "iris-app", ["iris", "diabetes"])
    port = free_port()
    with running_server(
        store, tmp_path / "logs", ready_path="/health", SERVICE_GRPC_PORT=str(port),
        SERVICE_API_KEYS_FILE=str(keys), SERVICE_WORKERS="1",
    ) as server:  # fmt: skip
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        assert client.is_server_live()  # the probes ask for no key
        assert not client.is_server_ready()
        tensor = grpcclient.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]]))
        with pytest.raises(InferenceServerException) as raised:
            client.infer("iris", [tensor])
        assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
        headers = {"x-api-key": key}
        assert client.infer("iris", [tensor], headers=headers).as_numpy("predict").tolist() == [b"setosa"]
        assert not client.is_model_ready("diabetes", headers=headers)
        with pytest.raises(InferenceServerException) as raised:
            client.infer("diabetes", [tensor], headers=headers)
        assert raised.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException) as raised:
            client.infer("breast_cancer", [tensor], headers=headers)
        assert raised.value.status() == "StatusCode.PERMISSION_DENIED"
        assert server.stop() == 0
