"""Markdown helpers of the generated page: numbers, ratios, tables."""

from __future__ import annotations

from typing import Optional


def number(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")
