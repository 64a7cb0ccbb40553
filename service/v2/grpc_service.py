"""The Open Inference Protocol over gRPC: KServe's ``GRPCInferenceService``, on the same dataplane.

Each method translates protobuf messages to the dataplane's requests and back,
as the REST views translate JSON; predictions go through the one prediction
core (so batching, metrics and the audit log see them), errors are the
service's typed exceptions, turned into gRPC status codes by the table that
also writes the HTTP answers (``service.api.problems.grpc_code``).

With API keys on, every method but the probes (ServerLive, ServerReady) asks
for a key in the ``x-api-key`` metadata or a bearer ``authorization``, as HTTP
does. Each call writes an access record like an HTTP request's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from service.access_log import record_line, write_stdout
from service.api import request_ids
from service.api.auth import key_from
from service.api.metrics import ServiceMetrics
from service.api.problems import grpc_code, protocol_message, unexpected_detail
from service.errors import InvalidTensor, NotAuthenticated, NotPermitted, ServiceError
from service.keyring import Client, KeyRing
from service.state import ServiceState
from service.v2 import dataplane
from service.v2 import grpc_predict_v2_pb2 as pb
from service.v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer
from service.v2.tensors import Output, from_bytes, from_json

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
# The typed contents field that holds each datatype's elements.
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_PROBES = frozenset({"ServerLive", "ServerReady"})


class InferenceService(GRPCInferenceServiceServicer):
    """The six methods of the protocol, over the app's model registry and prediction core."""

    def __init__(self, current: ServiceState, metrics: ServiceMetrics, ring: KeyRing | None = None) -> None:
        self.current = current
        self.metrics = metrics
        self.ring = ring

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> Any:
        return self._call("ServerLive", context, lambda call: pb.ServerLiveResponse(live=True))

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> Any:
        ready = dataplane.server_ready(self.current.registry)
        return self._call("ServerReady", context, lambda call: pb.ServerReadyResponse(ready=ready))

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> Any:
        def answer(call: _Call) -> Any:
            entry = dataplane.served(self.current.registry, call.model(request.name), request.version or None)
            return pb.ModelReadyResponse(ready=entry.ready)

        return self._call("ModelReady", context, answer)

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext) -> Any:
        return self._call(
            "ServerMetadata", context, lambda call: pb.ServerMetadataResponse(**dataplane.server_metadata())
        )

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> Any:
        def answer(call: _Call) -> Any:
            entry = dataplane.served(self.current.registry, call.model(request.name), request.version or None)
            found = dataplane.model_metadata(entry)
            return pb.ModelMetadataResponse(
                name=found["name"],
                versions=found["versions"],
                platform=found["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in found["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in found["outputs"]],
            )

        return self._call("ModelMetadata", context, answer)

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> Any:
        def answer(call: _Call) -> Any:
            current = self.current
            name = call.model(request.model_name)
            model = dataplane.loaded(current.registry, name, request.model_version or None)
            call.version = model.version
            max_rows = current.settings.max_batch_rows
            dataplane.within_rows_limit([tensor.shape for tensor in request.inputs], max_rows)
            inference = dataplane.InferenceRequest(
                inputs=tuple(read_inputs(request)),
                outputs=tuple(output.name for output in request.outputs) or None,
                id=request.id or None,
                parameters={key: _parameter(value) for key, value in request.parameters.items()},
            )
            found = dataplane.infer(
                current.core,
                model,
                inference,
                request_id=call.request_id,
                client=call.client.name if call.client is not None else None,
                max_rows=max_rows,
            )
            # Answered in the form asked in: raw bytes (what tritonclient sends) or typed contents.
            return infer_response(found, raw=bool(request.raw_input_contents))

        return self._call("ModelInfer", context, answer)

    def _call(self, method: str, context: grpc.ServicerContext, answer: Callable[[_Call], Any]) -> Any:
        """Run one method: the key check, then its answer or its error's status code; metrics and
        the access record either way."""
        started = time.perf_counter()
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        call = _Call(request_ids.chosen(metadata.get("x-request-id", "")))
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        code, detail, response = "OK", None, None
        try:
            if self.ring is not None and method not in _PROBES:
                call.client = self._client(metadata)
            response = answer(call)
        except ServiceError as error:
            code, detail = grpc_code(error), protocol_message(error)
            if code == "INTERNAL":
                log.error("%s (request id %s)", error.detail, call.request_id, exc_info=error)
                detail = f"{error.detail} (request id {call.request_id})"
        except Exception:
            log.exception("unexpected error in gRPC %s (request id %s)", method, call.request_id)
            code = "INTERNAL"
            detail = unexpected_detail(call.request_id)
        seconds = time.perf_counter() - started
        self.metrics.child(self.metrics.grpc_requests, method, code).inc()
        self.metrics.child(self.metrics.grpc_request_duration, method).observe(seconds)
        if call.client is not None:
            self.metrics.child(self.metrics.client_requests, call.client.name, code).inc()
        write_stdout(
            record_line(
                request_id=call.request_id,
                method="gRPC",
                path=f"/{SERVICE_NAME}/{method}",
                route=f"/{SERVICE_NAME}/{method}",
                status=code,
                duration=seconds,
                model=call.name,
                version=call.version,
                remote_addr=context.peer(),
                client=call.client.name if call.client is not None else None,
            )
        )
        if detail is not None:
            context.abort(getattr(grpc.StatusCode, code), detail)
        return response

    def _client(self, metadata: dict[str, str]) -> Client:
        key = key_from(metadata.get("x-api-key"), metadata.get("authorization", ""))
        assert self.ring is not None
        client = self.ring.client(key)
        if client is None:
            raise NotAuthenticated(
                "This method needs an API key: send it as 'x-api-key' "
                "or 'authorization: Bearer KEY' metadata."
                if key is None
                else "The API key is not known to this service."
            )
        return client


class _Call:
    """What one call found out: its request id, client, model and version (for the access record)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.client: Client | None = None
        self.name: str | None = None
        self.version: str | None = None

    def model(self, name: str) -> str:
        """Note the model the call names; a key limited to other models is refused."""
        self.name = name
        if self.client is not None and not self.client.may_use(name):
            raise NotPermitted(self.client.name, name)
        return name


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def read_inputs(request: pb.ModelInferRequest) -> list[Any]:
    """The request's tensors, from ``raw_input_contents`` (one entry per input) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "one per input, in order."
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            tensors.append(from_bytes(tensor.name, tensor.datatype, shape, raw[index]))
            continue
        field = CONTENTS.get(tensor.datatype)
        if field is None:  # FP16 has no typed field: the protocol sends it raw
            raise InvalidTensor(
                f"Input {tensor.name!r} is {tensor.datatype}, which has no typed contents: "
                "send raw_input_contents."
            )
        values = list(getattr(tensor.contents, field))
        if not values:
            sent = [other for other, _ in tensor.contents.ListFields()]
            if sent:
                raise InvalidTensor(
                    f"Input {tensor.name!r} is {tensor.datatype}: its elements go in {field}, "
                    f"not {sent[0].name}."
                )
        if tensor.datatype == "BYTES":
            try:
                values = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError:
                raise InvalidTensor(f"Input {tensor.name!r}: an element is not UTF-8 text.") from None
        tensors.append(from_json(tensor.name, tensor.datatype, shape, values))
    return tensors


def infer_response(found: dataplane.InferenceResponse, *, raw: bool) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=found.model_name, model_version=found.model_version, id=found.id or ""
    )
    for key, value in found.parameters.items():
        response.parameters[key].string_param = str(value)
    for output in found.outputs:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw:
            response.raw_output_contents.append(output.raw())
        else:
            _fill_contents(tensor.contents, output)
    return response


def _fill_contents(contents: pb.InferTensorContents, output: Output) -> None:
    flat = np.ascontiguousarray(output.values).reshape(-1)
    target = getattr(contents, CONTENTS[output.datatype])
    if output.datatype == "BYTES":
        target.extend(value.encode("utf-8", "surrogatepass") for value in flat.tolist())
    else:
        target.extend(flat.tolist())
