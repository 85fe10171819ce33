"""The collector's SQLite store, used in this process."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.payloads import llm_event, plain_event

from trubrics_mp.collector import EventStore
from trubrics_mp.collector._store import key_id


def test_store_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with EventStore(path) as first:
        assert first.add_batch("event", [plain_event(0), plain_event(1, user="u-2")]) == 1
        assert first.add_batch("llm_event", [llm_event()]) == 2
    with EventStore(path) as second:
        assert (second.count_events(), second.count_batches()) == (3, 2)
        events = second.query()
        assert [e["id"] for e in events] == [1, 2, 3]
        assert events[2]["kind"] == "llm_event" and events[2]["prompt"] == "hi"
        assert second.query(event="Generation") == [events[2]]
        assert second.query(user_id="u-2") == [events[1]]
        assert second.query(limit=2) == events[1:]
        assert second.query(limit=0) == []
        assert events[0] == {
            **plain_event(0),
            "id": 1,
            "batch_id": 1,
            "kind": "event",
            "received_at": events[0]["received_at"],
        }
        assert [b["n_events"] for b in second.batches()] == [2, 1]


def test_store_since_filters_on_received_at(store: EventStore) -> None:
    store.add_batch("event", [plain_event()])
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    assert store.query(since=future.isoformat()) == []
    assert len(store.query(since=past.isoformat())) == 1
    assert len(store.query(since=past.replace(tzinfo=None).isoformat())) == 1
    with pytest.raises(ValueError):
        store.query(since="not a time")


def test_a_database_made_before_key_ids_gains_the_column_and_keeps_its_batches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the schema before batches had a key_id
        old.execute(
            "CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " n_events INTEGER NOT NULL, received_at TEXT NOT NULL)"
        )
        old.execute("INSERT INTO batches (kind, n_events, received_at) VALUES ('event', 0, 't')")
    with EventStore(path) as store:
        store.add_batch("event", [plain_event()], key_id("sk-new"))
        batches = store.batches()
    assert [b["key_id"] for b in batches] == ["", key_id("sk-new")]
    assert key_id("sk-new") != key_id("sk-other") and "sk-new" not in key_id("sk-new")
