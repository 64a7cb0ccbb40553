"""Contract fuzzing: schemathesis against the live Gunicorn server, from its own OpenAPI document.

Every operation is exercised with generated valid and invalid requests; the run
fails on any 5xx, any answer that contradicts the document, any request the
document calls invalid that the service accepts, and any request it calls valid
that the service rejects. Bounded by a fixed number of examples per operation and
a fixed seed, so a failure reproduces.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import BIN, REPO_ROOT, Server, http, running_server

pytestmark = pytest.mark.integration

SCHEMATHESIS = BIN / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES_PER_OPERATION = 50
SEED = 20261125
RUN_TIMEOUT = 600  # seconds; the run takes about a minute and a half on 2 cores


@pytest.fixture(scope="module")
def fuzzed_server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A small row limit keeps every batch the document allows under the body limit,
    # so "valid" in the document is valid on the wire too.
    with running_server(
        demo_store_path, tmp_path_factory.mktemp("fuzzed_server"), SERVICE_MAX_BATCH_ROWS="50"
    ) as server:
        yield server


def operation_matcher(document: dict) -> list[tuple[re.Pattern[str], str]]:
    """Regexes for the document's paths, concrete paths before templated ones."""
    paths = sorted(document["paths"], key=lambda path: "{" in path)
    return [
        (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"), path) for path in paths
    ]


def operation_of(method: str, path: str, matchers: list[tuple[re.Pattern[str], str]]) -> str:
    return next(
        (f"{method} {template}" for regex, template in matchers if regex.match(path)), f"{method} {path}"
    )


def test_schemathesis_finds_no_contract_violation(fuzzed_server: Server, tmp_path: Path) -> None:
    har = tmp_path / "requests.har"
    command = [
        str(SCHEMATHESIS),
        "--config-file", str(CONFIG),
        "run", fuzzed_server.url("/openapi.json"),
        "--checks", "all",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", str(SEED),
        # One worker: CPython 3.11 before 3.11.8 can fail to parse in threads
        # (ast "recursion depth mismatch"), which hypothesis does to name strategies.
        "--workers", "1",
        "--request-timeout", "20",
        "--report", "har", "--report-har-path", str(har),
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]

    document = http("GET", fuzzed_server.url("/openapi.json")).json()
    matchers = operation_matcher(document)
    entries = json.loads(har.read_text())["log"]["entries"]
    per_operation = Counter(
        operation_of(entry["request"]["method"], urlsplit(entry["request"]["url"]).path, matchers)
        for entry in entries
    )
    print(f"\nschemathesis sent {len(entries)} requests:")
    for operation, count in sorted(per_operation.items()):
        print(f"  {count:6d}  {operation}")
    # Operations that take input get the full number of examples; the others
    # (no parameters, no body) have nothing to vary and are called a few times.
    with_input = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("parameters") or operation.get("requestBody")
    }
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    # schemathesis reads the document itself to start; that request is not in the HAR.
    documented.discard("GET /openapi.json")
    missed = {
        operation
        for operation in documented
        if per_operation[operation] < (EXAMPLES_PER_OPERATION if operation in with_input else 1)
    }
    assert not missed, f"operations fuzzed fewer than {EXAMPLES_PER_OPERATION} times: {sorted(missed)}"
