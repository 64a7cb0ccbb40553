"""What the benchmark measures: the contenders (a server, and how it is asked) and each scenario's.

A contender is one way of answering a scenario: the service as deployed, the
same service asked for its compact batch answer, the service with batching off
or serving with ONNX, the two baselines, and, for iris's batches, two that
explain the ratio to the bare app: the bare app's work inside a Flask route
(what any Flask app can keep of it) and the service's compact answer with ONNX.
Three more ask the service the same single rows over the Open Inference Protocol
(KServe V2): its JSON, its binary tensor extension, and gRPC.
Each scenario names the contenders that explain it, so the run spends its time
on the comparisons the report needs (see bench/README.md) rather than on every pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bodies import BATCH_ROWS, Scenario

SERVICE = "service"
COMPACT = "service compact"
UNBATCHED = "service batching off"
ONNX = "service onnx"
ONNX_COMPACT = "service onnx compact"
FLASK_ARRAYS = "flask arrays"
TUTORIAL = "tutorial"
BARE = "bare arrays"
V2_JSON = "service v2 json"
V2_BINARY = "service v2 binary"
GRPC = "service grpc"

# How a contender is asked (bench/measure.py picks the load generator, bench/checks.py the reader).
V1 = "v1"  # the service's own JSON routes, and the baselines'
V2_JSON_WIRE = "v2 json"  # POST /v2/models/NAME/infer, JSON
V2_BINARY_WIRE = "v2 binary"  # the same route, with the binary tensor extension
GRPC_WIRE = "grpc"  # inference.GRPCInferenceService/ModelInfer on the server's gRPC port
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Contender:
    label: str
    server: str  # the server it is measured on (see bench/procs.py, ``start``)
    query: str = ""  # added to the scenario's path
    wire: str = V1

    def path(self, scenario: Scenario) -> str:
        if self.wire == GRPC_WIRE:
            return GRPC_METHOD
        if self.wire != V1:
            return f"/v2/models/{scenario.model}/infer"
        return scenario.path + self.query

    def bodies(self, scenario: Scenario) -> Path:
        """The file its load generator sends: the scenario's own (v1), or its V2 bodies."""
        if self.wire == V1:
            return scenario.bodies
        if scenario.v2 is None:
            raise ValueError(f"{scenario.label} has no Open Inference Protocol bodies for {self.label}")
        return {
            V2_JSON_WIRE: scenario.v2.json,
            V2_BINARY_WIRE: scenario.v2.binary,
            GRPC_WIRE: scenario.v2.grpc,
        }[self.wire]


CONTENDERS = {
    c.label: c
    for c in (
        Contender(SERVICE, "service"),
        Contender(COMPACT, "service", "?format=compact"),
        Contender(UNBATCHED, "service-unbatched"),
        Contender(ONNX, "service-onnx"),
        Contender(ONNX_COMPACT, "service-onnx", "?format=compact"),
        Contender(FLASK_ARRAYS, "flask-arrays"),
        Contender(TUTORIAL, "tutorial"),
        Contender(BARE, "bare"),
        # The same server as "service": only the protocol differs.
        Contender(V2_JSON, "service", wire=V2_JSON_WIRE),
        Contender(V2_BINARY, "service", wire=V2_BINARY_WIRE),
        Contender(GRPC, "service", wire=GRPC_WIRE),
    )
}
# The Open Inference Protocol section's contenders, v1 (the ratios' base) first.
OPEN_INFERENCE = (SERVICE, V2_JSON, V2_BINARY, GRPC)

# The models' runtime for every server but the ONNX one: scikit-learn, as in the baselines,
# so that the comparisons with them measure serving, not a faster model.
SERVICE_SETTINGS = {
    "service": {"SERVICE_RUNTIME": "sklearn"},
    "service-unbatched": {"SERVICE_RUNTIME": "sklearn", "SERVICE_BATCHING": "off"},
    # Both demo models compile (the run stops the ONNX server if one does not: an uncompiled
    # model would keep it from being ready).
    "service-onnx": {"SERVICE_RUNTIME": "onnx"},
}

BATCHES = (SERVICE, COMPACT, TUTORIAL, BARE)


@dataclass(frozen=True)
class Planned:
    scenario: Scenario
    contenders: tuple[Contender, ...]

    @property
    def label(self) -> str:
        return self.scenario.label


def _planned(scenario: Scenario, *labels: str) -> Planned:
    return Planned(scenario, tuple(CONTENDERS[label] for label in labels))


def build_plan(bodies: dict[str, Any], quick: bool) -> list[Planned]:
    """The measured scenarios and their contenders; ``quick``: one of each kind of comparison."""
    iris, forest = bodies["iris"], bodies["breast_cancer"]
    protocols = OPEN_INFERENCE[1:]
    if quick:
        return [
            _planned(
                Scenario("iris", 1, 8, iris.single, iris.v2), SERVICE, UNBATCHED, TUTORIAL, BARE, *protocols
            ),
            _planned(Scenario("iris", BATCH_ROWS, 1, iris.batch), *BATCHES, FLASK_ARRAYS, ONNX_COMPACT),
            _planned(Scenario("breast_cancer", 1, 1, forest.single), SERVICE, ONNX),
        ]
    plan = [
        _planned(Scenario("iris", 1, 1, iris.single, iris.v2), SERVICE, TUTORIAL, BARE, *protocols),
        _planned(
            Scenario("iris", 1, 8, iris.single, iris.v2), SERVICE, UNBATCHED, TUTORIAL, BARE, *protocols
        ),
        _planned(Scenario("iris", 1, 64, iris.single), SERVICE, UNBATCHED, TUTORIAL),
        _planned(Scenario("breast_cancer", 1, 1, forest.single), SERVICE, ONNX, TUTORIAL),
        _planned(Scenario("breast_cancer", 1, 64, forest.single), SERVICE, UNBATCHED, ONNX, TUTORIAL),
    ]
    for model in (iris, forest):
        for connections in (1, 4):
            if model is iris:
                explaining: tuple[str, ...] = (FLASK_ARRAYS, ONNX_COMPACT)
            else:
                explaining = (ONNX,) if connections == 4 else ()
            plan.append(
                _planned(Scenario(model.model, BATCH_ROWS, connections, model.batch), *BATCHES, *explaining)
            )
    return plan


def servers_of(plan: list[Planned]) -> list[str]:
    """Every server the plan measures, in order of first use."""
    return list(dict.fromkeys(c.server for planned in plan for c in planned.contenders))


def grpc_servers(plan: list[Planned]) -> set[str]:
    """The servers that must also serve gRPC (SERVICE_GRPC_PORT): those of a gRPC contender."""
    return {c.server for planned in plan for c in planned.contenders if c.wire == GRPC_WIRE}
