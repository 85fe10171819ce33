"""The ``collect`` and ``events`` commands, run as real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.collector import ListeningProcess, http_request, post_events

SCRIPT = Path(sys.executable).parent / "trubrics-mp"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "trubrics_mp"]
RUN_TIMEOUT_S = 60


def event(i: int, user: str, **properties: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "event": f"Event {i}",
        "properties": {"i": i, **properties},
        "timestamp": "2026-11-29T10:00:00.000000+00:00",
    }


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def collect(db: Path, *extra: str) -> ListeningProcess:
    argv = [*COMMAND, "collect", "--db", str(db), "--port", "0", *extra]
    return ListeningProcess(argv, cwd=db.parent)


@pytest.mark.parametrize(
    ("command", "sig"),
    [(COMMAND, signal.SIGTERM), ([sys.executable, "-m", "trubrics_mp"], signal.SIGINT)],
)
def test_collect_prints_listening_line_and_exits_0(
    tmp_path: Path, command: list[str], sig: int
) -> None:
    db = tmp_path / "events.sqlite3"
    argv = [*command, "collect", "--db", str(db), "--port", "0", "--latency-ms", "1"]
    server = ListeningProcess(argv, cwd=tmp_path)
    try:
        server.start()
        first = server.lines[0]
        assert first == f"trubrics-mp collector listening on {server.url} (db: {db.resolve()})"
        assert server.port > 0
        assert http_request(server.url + "/health")[2] == {"ok": True, "events": 0, "batches": 0}
    finally:
        returncode = server.stop(sig=sig)
    assert returncode == 0, server.output_text
    assert server.lines[-1].startswith("trubrics-mp collector stopped")


@pytest.fixture
def filled_db(tmp_path: Path) -> Iterator[Path]:
    """A database filled through a running ``collect`` (still running during the test)."""
    db = tmp_path / "events.sqlite3"
    with collect(db) as server:
        assert post_events(server.url, [event(1, "alice"), event(2, "bob")])[0] == 200
        assert post_events(server.url, [event(3, "alice", note="x" * 200)])[0] == 200
        assert post_events(server.url, [event(4, "bob")])[0] == 200
        yield db


def test_events_table(filled_db: Path) -> None:
    result = run("events", "--db", str(filled_db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "received_at", "kind", "user_id", "event", "properties"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    event_column = lines[0].index("event ")
    assert {line[event_column:].split("  ")[0] for line in lines[1:]} == {
        f"Event {i}" for i in range(1, 5)
    }
    long_row = lines[3]
    assert long_row.endswith("...") and "x" * 200 not in long_row


def test_events_filters_and_last(filled_db: Path) -> None:
    result = run("events", "--db", str(filled_db), "--last", "2")
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["3", "4"]
    result = run("events", "--db", str(filled_db), "--user", "bob")
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["2", "4"]
    result = run("events", "--db", str(filled_db), "--event", "nothing")
    assert (result.returncode, result.stdout.strip()) == (0, "(no matching events)")


def test_events_json(filled_db: Path) -> None:
    result = run("events", "--db", str(filled_db), "--json", "--user", "alice")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["user_id"], r["event"], r["kind"]) for r in rows] == [
        (1, "alice", "Event 1", "event"),
        (3, "alice", "Event 3", "event"),
    ]
    assert rows[1]["properties"]["note"] == "x" * 200 and rows[0]["batch_id"] == 1


def test_events_without_database_exits_1(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite3"
    result = run("events", "--db", str(missing))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no collector database at {missing}" in result.stderr
    assert not missing.exists()


def test_no_command_prints_usage_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2
    assert "collect" in result.stderr and "events" in result.stderr


def test_collect_on_a_busy_port_exits_1(tmp_path: Path) -> None:
    with collect(tmp_path / "first.sqlite3") as first:
        port = first.port
        result = run("collect", "--db", str(tmp_path / "second.sqlite3"), "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_collect_with_unusable_database_path_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "no-such-dir" / "events.sqlite3"
    result = run("collect", "--db", str(db), "--port", "0")
    assert result.returncode == 1
    assert f"cannot open {db}" in result.stderr
