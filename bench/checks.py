"""Before measuring: every contender must answer what the service answers, or the comparison is not fair.

The answers differ in shape (the service's per-row probability objects, its
compact answer's matrix with the classes once, the baselines' bare arrays), so
each is read into the same thing first: the labels, and one probability per class
label for each row. Then labels must be identical and probabilities equal to
1e-9, or to 1e-5 for the ONNX runtime (the parity its compile step checks).
"""

from __future__ import annotations

import json
import math
from typing import Any

from bench.bodies import first_body
from bench.plan import ONNX, ONNX_COMPACT, SERVICE, Planned
from bench.procs import Server
from bench.store import probability_keys
from local_gunicorn import request

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


def check_answers(servers: dict[str, Server], plan: list[Planned], estimators: dict[str, Any]) -> list[str]:
    """The first body of each scenario's route from every contender: a note for each that fails
    to answer, and for each whose labels or probabilities differ from the service's."""
    notes = []
    for planned in plan:
        scenario = planned.scenario
        body = first_body(scenario.bodies)
        keys = probability_keys(estimators[scenario.model].classes_)
        answers = {}
        for contender in planned.contenders:
            path = contender.path(scenario)
            if contender.server not in servers:
                continue
            try:
                status, raw = request(servers[contender.server].url(path), body)
            except OSError as error:
                notes.append(f"{contender.label} did not answer POST {path}: {error}")
                continue
            if status != 200:
                notes.append(f"{contender.label} answered {status} to POST {path}: {raw[:300]!r}")
                continue
            try:
                answers[contender.label] = normalise(json.loads(raw), keys)
            except (ValueError, KeyError, TypeError) as error:
                notes.append(f"{contender.label}'s answer to POST {path} is not readable: {error!r}")
        if SERVICE not in answers:
            continue
        for label, answer in answers.items():
            tolerance = ONNX_CLOSE if label in (ONNX, ONNX_COMPACT) else CLOSE
            problem = difference(answers[SERVICE], answer, tolerance)
            if problem:
                notes.append(
                    f"POST {scenario.path}: {label} answers differently from the service ({problem})"
                )
    # Scenarios that share a route (iris single rows @1, @8 and @64) find the same faults once each.
    return list(dict.fromkeys(notes))
