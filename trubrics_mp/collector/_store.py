"""SQLite storage of received batches and events.

One ``EventStore`` holds one SQLite connection guarded by a lock, so it can be shared
by the threads of the HTTP server. The database is in WAL mode with a busy timeout,
so other processes (``trubrics-mp events``, a second store on the same file) may read
while the collector writes. Reopening the same file keeps all data.

Caveat: every call is serialised by the lock; this is a development and test tool,
not a high-throughput ingestion backend.
"""

import hashlib
import json
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ._validate import KIND_EVENT, KIND_LLM_EVENT, KINDS

BUSY_TIMEOUT_MS = 30_000


def key_id(api_key: str) -> str:
    """What the collector keeps of the key that sent a batch: a short digest of it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    n_events INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    key_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user_id ON events(user_id);
CREATE INDEX IF NOT EXISTS events_event ON events(event);
CREATE INDEX IF NOT EXISTS events_received_at ON events(received_at);
"""

StrPath = Union[str, "os.PathLike[str]"]


def utc_now_iso() -> str:
    """The current UTC time as stored in ``received_at`` (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalise_since(since: str) -> str:
    """Turn an ISO 8601 time into the ``received_at`` format; naive means UTC.

    Raises ValueError when ``since`` is not parseable by ``datetime.fromisoformat``.
    """
    moment = datetime.fromisoformat(since)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def event_name(kind: str, event: dict[str, Any]) -> str:
    """The name stored in ``events.event``: ``generation_event_name`` for LLM events."""
    if kind == KIND_LLM_EVENT:
        return str(event["generation_event_name"])
    return str(event["event"])


class EventStore:
    """Batches and events received by the collector, in one SQLite file."""

    def __init__(self, path: StrPath) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # shared by server threads, guarded by the lock
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(batches)")}
        if "key_id" not in columns:  # a database made before batches had a key_id
            self._conn.execute("ALTER TABLE batches ADD COLUMN key_id TEXT NOT NULL DEFAULT ''")

    def add_batch(self, kind: str, events: Sequence[dict[str, Any]], key_id: str = "") -> int:
        """Store one batch atomically and return its id.

        ``events`` must already be valid (see ``validate_batch``); only ``kind`` is
        checked here. ``key_id`` names the API key that sent it (see
        :func:`key_id`), never the key itself.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {KINDS}")
        received_at = utc_now_iso()
        rows = [
            (
                kind,
                str(event["user_id"]),
                event_name(kind, event),
                str(event["timestamp"]),
                json.dumps(event, ensure_ascii=False, separators=(",", ":")),
                received_at,
            )
            for event in events
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                batch_id = self._insert_batch(kind, rows, received_at, key_id)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return batch_id

    def _insert_batch(
        self, kind: str, rows: Sequence[tuple[str, ...]], received_at: str, key_id: str
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO batches (kind, n_events, received_at, key_id) VALUES (?, ?, ?, ?)",
            (kind, len(rows), received_at, key_id),
        )
        batch_id = cursor.lastrowid
        assert batch_id is not None
        self._conn.executemany(
            "INSERT INTO events (batch_id, kind, user_id, event, timestamp, payload_json,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(batch_id, *row) for row in rows],
        )
        return batch_id

    def query(
        self,
        user_id: Optional[str] = None,
        event: Optional[str] = None,
        since: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> list[dict[str, Any]]:
        """Matching events, oldest first.

        ``since`` is an ISO 8601 time compared with ``received_at`` (the collector's
        clock, not the event's own ``timestamp``); a naive time means UTC.
        ``limit`` keeps the *most recent* ``limit`` matches (still oldest first).
        Each dict is ``{"id", "batch_id", "kind", "received_at"}`` followed by the
        stored payload.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("user_id", user_id), ("event", event)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(normalise_since(since))
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT id, batch_id, kind, received_at, payload_json FROM events"
            f" {where} ORDER BY id DESC LIMIT ?"
        )
        params.append(-1 if limit is None else limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_event_dict(row) for row in reversed(rows)]

    def batches(self) -> list[dict[str, Any]]:
        """All batches, oldest first: ``id``, ``kind``, ``n_events``, ``received_at``,
        ``key_id``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, kind, n_events, received_at, key_id FROM batches ORDER BY id"
            ).fetchall()
        return [dict(row) for row in rows]

    def count_events(self) -> int:
        """Number of stored events."""
        return self._count("events")

    def count_batches(self) -> int:
        """Number of stored batches."""
        return self._count("batches")

    def _count(self, table: str) -> int:
        with self._lock:
            (count,) = self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the connection; later calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _event_dict(row: sqlite3.Row) -> dict[str, Any]:
    """Metadata first, then the payload; metadata wins on a (theoretical) clash."""
    payload: dict[str, Any] = json.loads(row["payload_json"])
    meta = {
        "id": row["id"],
        "batch_id": row["batch_id"],
        "kind": row["kind"],
        "received_at": row["received_at"],
    }
    return {**meta, **{k: v for k, v in payload.items() if k not in meta}}


__all__ = ["EventStore", "KIND_EVENT", "KIND_LLM_EVENT", "event_name", "normalise_since"]
