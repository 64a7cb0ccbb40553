"""What the benchmark measures: the contenders (a server, and how it is asked) and each scenario's.

A contender is one way of answering a scenario: the service as deployed, the
same service asked for its compact batch answer, the service with batching off
or serving with ONNX, the two baselines, and, for iris's batches, two that
explain the ratio to the bare app: the bare app's work inside a Flask route
(what any Flask app can keep of it) and the service's compact answer with ONNX.
Each scenario names the contenders that explain it, so the run spends its time
on the comparisons the report needs (see bench/README.md) rather than on every pair.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Contender:
    label: str
    server: str  # the server it is measured on (see bench/procs.py, ``start``)
    query: str = ""  # added to the scenario's path

    def path(self, scenario: Scenario) -> str:
        return scenario.path + self.query


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
    )
}

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
    if quick:
        return [
            _planned(Scenario("iris", 1, 8, iris.single), SERVICE, UNBATCHED, TUTORIAL, BARE),
            _planned(Scenario("iris", BATCH_ROWS, 1, iris.batch), *BATCHES, FLASK_ARRAYS, ONNX_COMPACT),
            _planned(Scenario("breast_cancer", 1, 1, forest.single), SERVICE, ONNX),
        ]
    plan = [
        _planned(Scenario("iris", 1, 1, iris.single), SERVICE, TUTORIAL, BARE),
        _planned(Scenario("iris", 1, 8, iris.single), SERVICE, UNBATCHED, TUTORIAL, BARE),
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
