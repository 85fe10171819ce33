"""``trubrics-mp spool status DIR`` and ``trubrics-mp spool purge [--force] DIR``.

``status`` reads a spool without taking its lock (a flusher using it is not
disturbed) and prints one ``name value`` line each: events and bytes on
disk, segments, the age of the oldest unacknowledged event, whether a live
process holds the lock (and the pid it recorded), and what damage was
skipped. ``--json`` prints the same as one JSON object.

``purge`` deletes the spool's events: it takes the lock first, so it refuses
while a live flusher uses the spool; ``--force`` deletes the files anyway
(a live flusher then loses what it appends to its current segment, and the
events it replays from memory are not on disk any more). The lock file
stays: removing a lock file another process has open would let two
processes hold "the" lock at once.

Exit status: 0 done; 1 ``purge`` refused because a live process holds the
lock; 2 the directory is missing or unusable (the message says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from ._spool import Spool
from ._spool_dir import BUSY, SpoolUnavailable, lock_holder_pid
from ._spool_format import seq_of
from ._spool_index import inspect
from ._spool_io import unlink

EXIT_OK, EXIT_BUSY, EXIT_UNUSABLE = 0, 1, 2


def add_spool_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spool",
        help="inspect or empty a disk spool",
        description="Inspect or empty a trubrics-mp disk spool directory.",
    )
    commands = parser.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    status = commands.add_parser("status", help="events, bytes, age and lock of a spool")
    status.add_argument("directory", metavar="DIR")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=run_status)
    purge = commands.add_parser("purge", help="delete every event of a spool")
    purge.add_argument("directory", metavar="DIR")
    purge.add_argument(
        "--force", action="store_true", help="delete even while a live process holds the lock"
    )
    purge.set_defaults(func=run_purge)


def status_fields(directory: str) -> dict[str, Any]:
    """What ``status`` shows; :class:`SpoolUnavailable` (``missing``) without a directory."""
    stats, locked = inspect(directory)
    fields: dict[str, Any] = {"directory": os.path.abspath(directory)}
    for name in ("events", "bytes", "segments", "oldest_age_s"):
        fields[name] = getattr(stats, name)
    fields["locked"] = locked
    fields["lock_pid"] = lock_holder_pid(directory) if locked else None
    for name in ("skipped_records", "skipped_bytes", "skipped_acks"):
        fields[name] = dataclasses.asdict(stats)[name]
    return fields


def _show(name: str, value: Any) -> str:
    if name == "oldest_age_s":
        return "-" if value is None else f"{value:.1f} s"
    if name == "locked":
        return "no" if not value else "yes, by a live process"
    return "-" if value is None else str(value)


def run_status(args: argparse.Namespace) -> int:
    try:
        fields = status_fields(args.directory)
    except (SpoolUnavailable, OSError) as exc:
        print(f"trubrics-mp spool status: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.json:
        print(json.dumps(fields))
    else:
        for name, value in fields.items():
            print(f"{name:<16} {_show(name, value)}")
    return EXIT_OK


def force_purge(directory: str) -> tuple[int, int]:
    """Delete every segment and ack file without the lock; the events and bytes removed."""
    stats, _ = inspect(directory)
    for name in os.listdir(directory):
        if seq_of(name) is not None:
            unlink(os.path.join(directory, name))
    return stats.events, stats.bytes


def run_purge(args: argparse.Namespace) -> int:
    directory = args.directory
    try:
        if not os.path.isdir(directory):  # Spool.open would make it
            raise SpoolUnavailable("missing", directory, "no such directory")
        if args.force:
            events, removed = force_purge(directory)
        else:
            with Spool.open(directory) as spool:
                events, removed = spool.purge()
    except SpoolUnavailable as exc:
        print(f"trubrics-mp spool purge: {exc}", file=sys.stderr)
        if exc.reason == BUSY:
            print("(--force deletes the files anyway)", file=sys.stderr)
            return EXIT_BUSY
        return EXIT_UNUSABLE
    except OSError as exc:
        print(f"trubrics-mp spool purge: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"purged {events} events ({removed} bytes) from {os.path.abspath(directory)}")
    return EXIT_OK
