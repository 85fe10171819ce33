"""``trubrics-mp demo``, run for real: collector, gunicorn, load, stop, summary.

The demo's own verdict is checked against the SQLite file it leaves, read
back through ``trubrics-mp events`` (not through the demo's code).
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
from support.processes import flushers, is_running, poll_until

SCRIPT = Path(sys.executable).parent / "trubrics-mp"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "trubrics_mp"]
SMALL = ["--requests", "200", "--concurrency", "4", "--workers", "2"]
RUN_TIMEOUT_S = 240
FINAL_PROGRESS = re.compile(r"^requests \[#{30}\] 200/200 100% +\d+ req/s$", re.M)
ANY_PROGRESS = re.compile(r"^requests \[[#-]{30}\] +\d+/200 +\d+%", re.M)
# Ctrl-C as a terminal delivers it, whatever the disposition the test runner inherited.
WITH_SIGINT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
    "from trubrics_mp.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def stored_events(db: Path, cwd: Path) -> list[dict[str, Any]]:
    result = run("events", "--db", str(db), "--json", "--last", "0", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_small_demo_stores_every_event_exactly_once(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    result = run("demo", *SMALL, "--json", "--summary-json", str(summary_file), cwd=tmp_path)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    summary = json.loads(output.splitlines()[-1])
    assert summary == json.loads(summary_file.read_text())
    assert summary["ok"] and summary["problems"] == []
    assert summary["tracked"] == summary["stored"] == summary["unique"] == 400
    assert (summary["duplicates"], summary["missing"]) == (0, 0)
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == 200
    assert len(summary["events_per_worker"]) == 2 == summary["worker_reports"]
    assert sum(summary["events_per_worker"].values()) == 400
    assert summary["collector_requests"] > 0
    assert summary["track_us"]["calls"] == summary["track_llm_us"]["calls"] == 200
    assert summary["track_us"]["p50_us"] > 0 and summary["drain_seconds"] is not None
    assert summary["gunicorn_exit_status"] == 0 and summary["flusher_pid"] is not None
    # stdout is a pipe: plain progress lines, the last one complete.
    assert len(ANY_PROGRESS.findall(output)) >= 2 and FINAL_PROGRESS.search(output), output
    assert "\r" not in output
    assert "OK: every tracked event was stored exactly once." in output

    db = tmp_path / "trubrics-demo.sqlite3"  # the default, kept after the run
    assert db.is_file() and summary["db"] == str(db.resolve())
    assert f"trubrics-mp events --db {db.resolve()}" in output
    check_database(db, summary, tmp_path)
    table = run("events", "--db", str(db), "--event", "User prompt", "--last", "5", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert [line.count("User prompt") for line in table.stdout.splitlines()[1:]] == [1] * 5


def check_database(db: Path, summary: dict[str, Any], cwd: Path) -> None:
    """The kept SQLite file, read by ``trubrics-mp events``, agrees with the summary."""
    ours = [e for e in stored_events(db, cwd) if e["properties"]["demo_run"] == summary["run_id"]]
    ids = collections.Counter(e["properties"]["demo_id"] for e in ours)
    assert set(ids) == {f"{seq}/{kind}" for seq in range(200) for kind in ("prompt", "llm")}
    assert max(ids.values()) == 1
    pids = collections.Counter(str(e["properties"]["worker_pid"]) for e in ours)
    assert pids == collections.Counter(summary["events_per_worker"])
    prompts = [e for e in ours if e["kind"] == "event"]
    assert {e["event"] for e in prompts} == {"User prompt"}
    assert all(e["properties"]["$thread_id"] for e in prompts)
    generations = [e for e in ours if e["kind"] == "llm_event"]
    assert {e["assistant_id"] for e in generations} == {"demo-assistant"}
    assert all(e["latency"] > 0 and e["thread_id"] for e in generations)


def test_without_gunicorn_it_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['gunicorn'] = None;"  # makes gunicorn unimportable
        "from trubrics_mp.__main__ import main; sys.exit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "gunicorn is not installed" in result.stderr
    assert "-m pip install gunicorn" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was started, no database made


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", WITH_SIGINT, "demo", "--requests", "1000000"]
    demo = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        assert demo.stdout is not None
        for line in demo.stdout:  # until the load is running
            lines.append(line)
            if line.startswith("requests ["):
                break
        assert lines and lines[-1].startswith("requests ["), "".join(lines)
        started = psutil.Process(demo.pid).children(recursive=True) + flushers()
        names = " ".join(_cmdline(p) for p in started)
        assert "gunicorn" in names and "collect" in names and "trubrics-mp-flusher" in names
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=RUN_TIMEOUT_S)[0]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, "".join(lines) + rest
    assert "interrupted; everything it started is stopped" in rest
    assert "Traceback" not in rest
    poll_until(lambda: not any(is_running(p.pid) for p in started), 60, f"{started} to exit")
    # The stop was graceful: what was tracked before Ctrl-C is stored, once, in pairs.
    ids = collections.Counter(
        e["properties"]["demo_id"]
        for e in stored_events(tmp_path / "trubrics-demo.sqlite3", tmp_path)
    )
    assert ids and max(ids.values()) == 1
    assert {i.replace("/llm", "/prompt") for i in ids} == {i for i in ids if i.endswith("/prompt")}


def _cmdline(process: psutil.Process) -> str:
    """Its command line; empty for a zombie (a flusher's bootstrap not reaped yet, say)."""
    try:
        return " ".join(process.cmdline())
    except psutil.ZombieProcess:
        return ""
