"""``trubrics-mp demo``: the library's main job, for real, in under a minute.

A local collector, a gunicorn server whose workers share one flusher, a
chat-style app tracking two events per request, concurrent load with a
progress bar, a graceful stop and a summary (exactly-once check, events per
worker, ``track()`` cost, drain time). No network, no account; needs gunicorn.

Modules: :mod:`.app` (the WSGI app), :mod:`.gunicorn_conf` (its gunicorn
settings), :mod:`.load` (load generator, progress bar), :mod:`.services`
(server subprocesses), :mod:`.run` (orchestration), :mod:`.summary`.
Importing this package imports none of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._argtypes import at_least

DEFAULT_DB = "./trubrics-demo.sqlite3"


def add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``: gunicorn workers sharing one flusher, against a local collector."""
    parser = subparsers.add_parser(
        "demo",
        help="run gunicorn workers that share one flusher against a local collector",
        description="Run a local collector and gunicorn serving a chat app that tracks two"
        " events per request; send it concurrent requests, stop it, check that every event"
        " was stored exactly once (exit status 0). Needs gunicorn; no network, no account.",
    )
    counts = (
        ("--requests", 2000, "N", "requests to send"),
        ("--concurrency", 8, "C", "concurrent connections"),
        ("--workers", 4, "W", "gunicorn workers"),
    )
    for flag, default, metavar, text in counts:
        parser.add_argument(
            flag,
            type=at_least(1, int),
            default=default,
            metavar=metavar,
            help=f"{text} (default {default})",
        )
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="PATH",
        help=f"the collector's SQLite file, kept afterwards (default {DEFAULT_DB})",
    )
    parser.add_argument("--json", action="store_true", help="end with the summary as one JSON line")
    parser.add_argument(
        "--summary-json",
        metavar="PATH",
        default=None,
        help="also write the summary as JSON to PATH",
    )
    parser.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo with the parsed options; its exit status."""
    from .run import DemoOptions, run_demo

    options = DemoOptions(
        requests=args.requests,
        concurrency=args.concurrency,
        workers=args.workers,
        db=Path(args.db),
        json_line=args.json,
        summary_json=None if args.summary_json is None else Path(args.summary_json),
    )
    return run_demo(options, sys.stdout)


__all__ = ["DEFAULT_DB", "add_demo_parser", "run_demo_command"]
