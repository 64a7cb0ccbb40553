"""Reading back what the service records: a /metrics scrape, the audit file, JSON log lines.

Shared by the tests of each recorder (test_metrics.py, test_audit.py, test_logs.py)
and by the tests that check them all after a load on real Gunicorn.
"""

from __future__ import annotations

import collections
import io
import json
import math
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "sklearn_service_"


class Metrics:
    """One scrape, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == PREFIX + name and labels.items() <= sample.labels.items()
        )

    def by(self, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
        """The samples named ``name``, summed per combination of ``label_names``."""
        totals: dict[tuple[str, ...], float] = collections.defaultdict(float)
        for sample in self.samples:
            if sample.name == PREFIX + name:
                totals[tuple(sample.labels[label] for label in label_names)] += sample.value
        return dict(totals)

    def label_sets(self, name: str) -> set[frozenset[tuple[str, str]]]:
        return {frozenset(sample.labels.items()) for sample in self.samples if sample.name == PREFIX + name}

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of one histogram series, by bound."""
        bounds = [
            (float(sample.labels["le"]), sample.value)
            for sample in self.samples
            if sample.name == PREFIX + name + "_bucket"
            and labels.items() <= sample.labels.items()
            and sample.labels.keys() - {"le"} == labels.keys()
        ]
        return sorted(bounds)


def scrape(client: FlaskClient) -> Metrics:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return Metrics(response.get_data(as_text=True))


def check_histogram(metrics: Metrics, name: str, **labels: str) -> None:
    """Buckets never decrease, +Inf holds every observation, and the sum is positive."""
    buckets = metrics.buckets(name, **labels)
    assert buckets, f"no buckets for {name} {labels}"
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), (name, labels, buckets)
    assert buckets[-1][0] == math.inf
    assert buckets[-1][1] == metrics.value(name + "_count", **labels)
    assert metrics.value(name + "_sum", **labels) > 0


def read_audit(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def json_records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]
