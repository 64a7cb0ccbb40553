"""Before measuring: every contender must answer what the service answers, or the comparison is not fair.

The answers differ in shape (the service's per-row probability objects, its
compact answer's matrix with the classes once, the baselines' bare arrays, the
Open Inference Protocol's output tensors), so each is read into the same thing
first: the labels, and one probability per class label for each row. Then labels
must be identical and probabilities equal to 1e-9, or to 1e-5 for the ONNX
runtime (the parity its compile step checks).

The Open Inference Protocol's contenders are asked the first row their own way
(bench/v2_wire.py reads their outputs): V2 JSON and the binary tensor extension
over HTTP, and the very body h2load sends through a gRPC client, which reads the
call's status that h2load cannot see.
"""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Callable
from typing import Any

import grpc

from bench import v2_wire
from bench.bodies import Scenario, first_body
from bench.plan import (
    CONTENDERS,
    GRPC_WIRE,
    ONNX,
    ONNX_COMPACT,
    SERVICE,
    V2_BINARY_WIRE,
    V2_JSON_WIRE,
    Contender,
    Planned,
)
from bench.procs import Server
from bench.store import probability_keys
from local_gunicorn import REQUEST_TIMEOUT, request

CLOSE = 1e-9
ONNX_CLOSE = 1e-5

Rows = tuple[list[Any], list[dict[str, float]]]


def _key(label: Any) -> str:
    return label if isinstance(label, str) else json.dumps(label)


def normalise(answer: dict[str, Any], class_keys: list[str]) -> Rows:
    """(labels, per row {class label: probability}) from any contender's answer; ``class_keys``
    name the columns of a probability matrix that does not name them itself."""
    if "predictions" in answer:
        labels, probabilities = answer["predictions"], answer["probabilities"]
    else:
        labels, probabilities = [answer["prediction"]], [answer["probabilities"]]
    if "classes" in answer:
        class_keys = [_key(label) for label in answer["classes"]]
    rows = [p if isinstance(p, dict) else dict(zip(class_keys, p, strict=True)) for p in probabilities]
    return labels, rows


def difference(expected: Rows, found: Rows, tolerance: float) -> str | None:
    """Where two normalised answers differ, or None."""
    (labels, rows), (other_labels, other_rows) = expected, found
    if labels != other_labels:
        return f"labels {labels[:5]} != {other_labels[:5]}"
    for index, (row, other) in enumerate(zip(rows, other_rows, strict=True)):
        if set(row) != set(other):
            return f"row {index}: classes {sorted(row)} != {sorted(other)}"
        for key, value in row.items():
            if not math.isclose(value, other[key], rel_tol=tolerance, abs_tol=tolerance):
                return f"row {index}, {key}: {value!r} != {other[key]!r}"
    return None


class Unanswered(RuntimeError):
    """A contender did not answer its first body as it should; the message says how."""


def ask_json(server: Server, contender: Contender, scenario: Scenario) -> dict[str, Any]:
    """POST the first line of the contender's JSON bodies (v1, or V2 JSON) and read the answer."""
    path = contender.path(scenario)
    try:
        status, raw = request(server.url(path), first_body(contender.bodies(scenario)))
    except OSError as error:
        raise Unanswered(f"did not answer POST {path}: {error}") from None
    if status != 200:
        raise Unanswered(f"answered {status} to POST {path}: {raw[:300]!r}")
    answer = json.loads(raw)
    return v2_wire.read_json(answer) if contender.wire == V2_JSON_WIRE else answer


def ask_binary(server: Server, contender: Contender, scenario: Scenario) -> dict[str, Any]:
    """POST the first body of the binary extension's file with its two headers, as post_binary.lua does."""
    assert scenario.v2 is not None  # contender.bodies needs them too
    path = contender.path(scenario)
    with contender.bodies(scenario).open("rb") as handle:
        body = handle.read(scenario.v2.binary_size)
    headers = {
        "Content-Type": v2_wire.BINARY_MEDIA_TYPE,
        v2_wire.HEADER_LENGTH: str(scenario.v2.binary_header),
    }
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        raw, length = response.read(), response.getheader(v2_wire.HEADER_LENGTH)
    except (OSError, http.client.HTTPException) as error:
        raise Unanswered(f"did not answer the binary POST {path}: {error!r}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise Unanswered(f"answered {response.status} to the binary POST {path}: {raw[:300]!r}")
    if length is None:
        raise Unanswered(f"answered the binary POST {path} without {v2_wire.HEADER_LENGTH}")
    return v2_wire.read_binary(int(length), raw)


def ask_grpc(server: Server, contender: Contender, scenario: Scenario) -> dict[str, Any]:
    """The message in h2load's body file, through a gRPC client that reads the call's status."""
    # Imported here, as in bench/v2_wire.py: tritonclient's messages share the package name.
    from service.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    message = v2_wire.grpc_unframe(contender.bodies(scenario).read_bytes())
    with grpc.insecure_channel(server.grpc_address) as channel:
        try:
            # wait_for_ready: each worker starts its gRPC server once forked, a moment after the master.
            response = GRPCInferenceServiceStub(channel).ModelInfer(
                message, timeout=REQUEST_TIMEOUT, wait_for_ready=True
            )
        except grpc.RpcError as error:
            raise Unanswered(f"answered ModelInfer with {error.code().name}: {error.details()}") from None
    return v2_wire.read_grpc(response)


# By the contender's wire; any other is asked with its JSON bodies.
ASK: dict[str, Callable[[Server, Contender, Scenario], dict[str, Any]]] = {
    V2_BINARY_WIRE: ask_binary,
    GRPC_WIRE: ask_grpc,
}


def check_answers(servers: dict[str, Server], plan: list[Planned], estimators: dict[str, Any]) -> list[str]:
    """The first body of each scenario from every contender: a note for each that fails to answer,
    and for each whose labels or probabilities differ from the service's."""
    notes = []
    for planned in plan:
        scenario = planned.scenario
        keys = probability_keys(estimators[scenario.model].classes_)
        answers = {}
        for contender in planned.contenders:
            if contender.server not in servers:
                continue
            ask = ASK.get(contender.wire, ask_json)
            try:
                answers[contender.label] = normalise(
                    ask(servers[contender.server], contender, scenario), keys
                )
            except Unanswered as error:
                notes.append(f"{contender.label} {error}")
            except (ValueError, KeyError, TypeError) as error:
                path = contender.path(scenario)
                notes.append(f"{contender.label}'s answer to {path} is not readable: {error!r}")
        if SERVICE not in answers:
            continue
        for label, answer in answers.items():
            tolerance = ONNX_CLOSE if label in (ONNX, ONNX_COMPACT) else CLOSE
            problem = difference(answers[SERVICE], answer, tolerance)
            if problem:
                path = CONTENDERS[label].path(scenario)
                notes.append(f"POST {path}: {label} answers differently from the service ({problem})")
    # Scenarios that share a route (iris single rows @1, @8 and @64) find the same faults once each.
    return list(dict.fromkeys(notes))
