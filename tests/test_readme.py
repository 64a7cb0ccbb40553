"""What the README promises an operator, where it must say it."""

from __future__ import annotations

import re

from tests.servers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_exposing_the_service_says_to_put_a_buffering_proxy_in_front() -> None:
    # Gunicorn has no timeout for reading headers: slow clients can hold every thread.
    [host_row] = [line for line in README.splitlines() if line.startswith("| `HOST` |")]
    assert "`0.0.0.0`" in host_row and "buffering reverse proxy" in host_row
    anchor = re.search(r"\(#([a-z0-9-]+)\)", host_row)
    assert anchor is not None
    heading = next(line for line in README.splitlines() if line.startswith("### Slow clients"))
    assert anchor.group(1) == re.sub(r"[^a-z0-9 -]", "", heading.lstrip("# ").lower()).replace(" ", "-")
    section = " ".join(README.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0].split())
    assert "no timeout for reading headers" in section and "proxy_request_buffering" in section
