"""Before measuring: the baselines must answer what the service answers, or the comparison is not fair."""

from __future__ import annotations

import json
import math
from typing import Any

from bench.bodies import Scenario, first_body
from bench.procs import BASELINES, Server
from local_gunicorn import request


def difference(expected: Any, found: Any, where: str = "") -> str | None:
    """Where two answer documents differ (floats to 1e-9), or None."""
    if isinstance(expected, dict) and isinstance(found, dict):
        if set(expected) != set(found):
            return f"{where or 'top'}: keys {sorted(expected)} != {sorted(found)}"
        for key in expected:
            if (problem := difference(expected[key], found[key], f"{where}.{key}")) is not None:
                return problem
        return None
    if isinstance(expected, list) and isinstance(found, list):
        if len(expected) != len(found):
            return f"{where}: {len(expected)} items != {len(found)}"
        for index, (a, b) in enumerate(zip(expected, found, strict=True)):
            if (problem := difference(a, b, f"{where}[{index}]")) is not None:
                return problem
        return None
    if isinstance(expected, float) and isinstance(found, float):
        same = math.isclose(expected, found, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = expected == found and type(expected) is type(found)
    return None if same else f"{where}: {expected!r} != {found!r}"


def check_answers(servers: dict[str, Server], scenarios: list[Scenario]) -> list[str]:
    """The first body of each scenario's route to every server: a note for each that fails to
    answer, and for each baseline whose answer differs from the service's."""
    notes = []
    for path, bodies in {s.path: s.bodies for s in scenarios}.items():
        answers = {}
        for name, server in servers.items():
            try:
                status, raw = request(server.url(path), first_body(bodies))
            except OSError as error:
                notes.append(f"{name} did not answer POST {path}: {error}")
                continue
            if status != 200:
                notes.append(f"{name} answered {status} to POST {path}: {raw[:300]!r}")
            else:
                answers[name] = json.loads(raw)
        for name in BASELINES:
            if "service" in answers and name in answers:
                problem = difference(answers["service"], answers[name])
                if problem:
                    notes.append(f"POST {path}: {name} answers differently from the service ({problem})")
    return notes
