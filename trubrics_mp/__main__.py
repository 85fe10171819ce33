"""Command line of trubrics-mp (``trubrics-mp`` and ``python -m trubrics_mp``).

Each subcommand is registered by an ``add_*_parser(subparsers)`` function that sets
``func`` (``(argparse.Namespace) -> int``) as a parser default; ``main`` dispatches.
"""

import argparse
import sys
from typing import Optional, Sequence

from trubrics_mp._spool_cli import add_spool_parser
from trubrics_mp.collector.cli import add_collect_parser, add_events_parser
from trubrics_mp.demo import add_demo_parser
from trubrics_mp.doctor import add_doctor_parser


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="trubrics-mp",
        description="Fork-safe Trubrics client: tools for development and testing.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_collect_parser(subparsers)
    add_events_parser(subparsers)
    add_demo_parser(subparsers)
    add_doctor_parser(subparsers)
    add_spool_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args))


if __name__ == "__main__":
    raise SystemExit(main())
