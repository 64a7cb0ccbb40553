"""Markdown tables and the number formats the report's tables share."""

from __future__ import annotations

from collections.abc import Sequence


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    """Requests per second: whole numbers, but slow scenarios keep their first digits."""
    if value is None:
        return "-"
    return number(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines
