"""Argument types shared by the ``trubrics-mp`` subcommands."""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

N = TypeVar("N", int, float)


def at_least(low: N, kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse ``type`` that parses with ``kind`` and refuses values below ``low``."""

    def parse(text: str) -> N:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse
