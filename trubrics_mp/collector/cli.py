"""The ``collect`` and ``events`` subcommands of ``trubrics-mp``.

Each ``add_*_parser`` registers one subcommand and sets ``func`` on the parsed
arguments to a callable ``(argparse.Namespace) -> int`` returning the exit status.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Sequence

from .._argtypes import at_least
from . import serve
from ._store import EventStore

DEFAULT_DB = "./trubrics-events.sqlite3"
PROPERTIES_WIDTH = 48
CELL_WIDTH = 32
COLUMNS = ("id", "received_at", "kind", "user_id", "event", "properties")


def add_collect_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``collect``: run a local Trubrics-compatible ingestion server."""
    parser = subparsers.add_parser(
        "collect",
        help="run a local Trubrics-compatible ingestion server",
        description="Accept POST /publish_events and /publish_llm_events like the Trubrics"
        " API and store every event in SQLite. Stops on SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port, 0 for any free one (default 8000)"
    )
    parser.add_argument(
        "--latency-ms",
        type=at_least(0.0, float),
        default=0.0,
        help="delay every POST response by this much, to mimic the cloud (default 0)",
    )
    parser.set_defaults(func=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    """Run the collector in the foreground (see ``trubrics_mp.collector.serve``)."""
    return serve(args.db, args.host, args.port, latency_s=args.latency_ms / 1000)


def add_events_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``events``: show the last events stored by the collector."""
    parser = subparsers.add_parser(
        "events",
        help="show the last events stored by the collector",
        description="Print the last N matching events, oldest first.",
    )
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    parser.add_argument("--user", metavar="ID", help="only events of this user_id")
    parser.add_argument("--event", metavar="NAME", help="only events with this name")
    parser.add_argument(
        "--last",
        metavar="N",
        type=at_least(0, int),
        default=20,
        help="how many of the most recent events (default 20, 0 for all)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run_events)


def run_events(args: argparse.Namespace) -> int:
    """Print matching events; exit 1 with a message if the database is missing."""
    db = Path(args.db)
    if not db.is_file():
        print(
            f"trubrics-mp events: no collector database at {db}"
            " (start one with `trubrics-mp collect --db PATH`)",
            file=sys.stderr,
        )
        return 1
    try:
        with EventStore(db) as store:
            events = store.query(user_id=args.user, event=args.event, limit=args.last or None)
    except sqlite3.DatabaseError as exc:
        print(f"trubrics-mp events: cannot read {db}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for event in events:
            print(json.dumps(event, ensure_ascii=False))
    else:
        print(format_table(events))
    return 0


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _row(event: dict[str, Any]) -> list[str]:
    """The table cells of one event (``received_at`` shown in UTC to the millisecond)."""
    properties = json.dumps(event.get("properties"), ensure_ascii=False, separators=(",", ":"))
    received = str(event["received_at"]).replace("T", " ")[:23]
    cells = [str(event["id"]), received, str(event["kind"])]
    name = event.get("event") or event.get("generation_event_name", "")  # LLM events: no "event"
    cells += [_truncate(str(value), CELL_WIDTH) for value in (event.get("user_id", ""), name)]
    return [*cells, _truncate(properties, PROPERTIES_WIDTH)]


def format_table(events: Sequence[dict[str, Any]]) -> str:
    """An aligned text table of ``events`` (one header line, one line per event)."""
    if not events:
        return "(no matching events)"
    rows = [list(COLUMNS)] + [_row(event) for event in events]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
