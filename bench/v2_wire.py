"""The Open Inference Protocol (KServe V2) as the bench sends and reads it.

Requests: one FP64 tensor named ``input`` of shape ``[rows, features]``, columns
in the manifest's order (the bench's rows already are), as JSON data, as the
binary tensor extension's raw bytes after a JSON header, or as a gRPC
``ModelInferRequest`` with ``raw_input_contents``. Answers: the outputs
``predict`` and ``predict_proba``, read into the bare app's shape,
``{"predictions": labels, "probabilities": matrix}``, which bench/checks.py
compares with every other contender's.

Raw elements are little-endian; a BYTES element is a 4-byte little-endian
length and that many bytes of UTF-8. Decoded here rather than by the service's
own code, so that the check does not trust what it checks.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from service.v2 import grpc_predict_v2_pb2 as pb

INPUT = "input"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
# gRPC's length prefix: one byte (0: not compressed), then the message's length, big-endian.
_PREFIX = struct.Struct(">BI")
_BYTES_LENGTH = struct.Struct("<I")
_NUMBERS = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


class AnswerError(ValueError):
    """An answer the bench cannot read as labels and probabilities."""


def _matrix(rows: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(rows, dtype="<f8"))


def json_body(rows: np.ndarray) -> dict[str, Any]:
    matrix = _matrix(rows)
    tensor = {"name": INPUT, "shape": list(matrix.shape), "datatype": "FP64", "data": matrix.ravel().tolist()}
    return {"inputs": [tensor]}


def binary_body(rows: np.ndarray) -> tuple[bytes, int]:
    """The body and the length of its JSON header (the Inference-Header-Content-Length); every
    output asked as bytes too, as a client of the extension would."""
    matrix = _matrix(rows)
    raw = matrix.tobytes()
    tensor = {
        "name": INPUT,
        "shape": list(matrix.shape),
        "datatype": "FP64",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps(
        {"inputs": [tensor], "parameters": {"binary_data_output": True}}, separators=(",", ":")
    ).encode()
    return header + raw, len(header)


def grpc_request(model: str, rows: np.ndarray) -> pb.ModelInferRequest:
    pb = _messages()
    matrix = _matrix(rows)
    tensor = pb.ModelInferRequest.InferInputTensor(name=INPUT, datatype="FP64", shape=list(matrix.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[matrix.tobytes()])


def grpc_frame(message: pb.ModelInferRequest) -> bytes:
    """The message as gRPC sends it in an HTTP/2 body: what h2load posts."""
    serialized = message.SerializeToString()
    return _PREFIX.pack(0, len(serialized)) + serialized


def grpc_unframe(body: bytes) -> pb.ModelInferRequest:
    """The message of a body ``grpc_frame`` wrote."""
    if len(body) < _PREFIX.size:
        raise AnswerError("a gRPC body starts with a 5-byte prefix")
    compressed, length = _PREFIX.unpack_from(body)
    if compressed or length != len(body) - _PREFIX.size:
        raise AnswerError(f"gRPC prefix ({compressed}, {length}) does not match a {len(body)}-byte body")
    return _messages().ModelInferRequest.FromString(body[_PREFIX.size :])


def _messages() -> Any:
    # Imported when used: the protocol's messages are registered under the package
    # "inference", as tritonclient's are, and one process cannot hold both (the test
    # process imports tritonclient; the bench's own process, this module).
    from service.v2 import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


def _elements(datatype: str, raw: bytes) -> list[Any]:
    if datatype in _NUMBERS:
        return np.frombuffer(raw, dtype=_NUMBERS[datatype]).tolist()
    if datatype != "BYTES":
        raise AnswerError(f"raw {datatype} elements are not read by the bench")
    found, offset = [], 0
    while offset < len(raw):
        (length,) = _BYTES_LENGTH.unpack_from(raw, offset)
        offset += _BYTES_LENGTH.size
        found.append(raw[offset : offset + length].decode("utf-8"))
        offset += length
    return found


def _arrays(outputs: dict[str, tuple[list[int], list[Any]]]) -> dict[str, Any]:
    """{"predictions", "probabilities"} from each output's (shape, flat elements)."""
    try:
        (_, labels), (shape, probabilities) = outputs["predict"], outputs["predict_proba"]
    except KeyError as missing:
        raise AnswerError(f"no output {missing} among {sorted(outputs)}") from None
    return {"predictions": labels, "probabilities": np.reshape(probabilities, shape).tolist()}


def read_json(document: dict[str, Any]) -> dict[str, Any]:
    return _arrays({o["name"]: (o["shape"], o["data"]) for o in document["outputs"]})


def read_binary(header_length: int, body: bytes) -> dict[str, Any]:
    """An answer of the binary extension: ``header_length`` bytes of JSON, then each output's bytes."""
    document = json.loads(body[:header_length])
    outputs, offset = {}, header_length
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        elements = _elements(output["datatype"], body[offset : offset + size])
        outputs[output["name"]] = (output["shape"], elements)
        offset += size
    if offset != len(body):
        raise AnswerError(f"{len(body) - offset} bytes follow the outputs' binary_data_size")
    return _arrays(outputs)


def read_grpc(response: pb.ModelInferResponse) -> dict[str, Any]:
    """A ModelInfer answer to raw input contents: each output's elements in raw_output_contents."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise AnswerError(
            f"{len(response.raw_output_contents)} raw output contents for {len(response.outputs)} outputs"
        )
    return _arrays(
        {
            o.name: (list(o.shape), _elements(o.datatype, raw))
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
    )
