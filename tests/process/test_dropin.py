"""Drop-in for code written against the official SDK 1.8.5 and its documentation."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.collector import CollectorProcess

from trubrics_mp import Trubrics

SUPPORT = Path(__file__).resolve().parents[1] / "support"
TIMEOUT_S = 120


def run_snippets(collector: CollectorProcess, tz: str) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "TZ": tz}
    done = subprocess.run(
        [sys.executable, str(SUPPORT / "official_snippets.py"), collector.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_the_official_snippets_run_unchanged_and_deliver(collector: CollectorProcess) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    seen, stderr = run_snippets(collector, tz="Asia/Tokyo")  # UTC+9: a naive now() is local
    after = datetime.datetime.now(datetime.timezone.utc)
    events = collector.wait_for_events(2)
    by_kind = {e["kind"]: e for e in events}
    assert set(by_kind) == {"event", "llm_event"} and len(events) == 2
    sent = datetime.datetime.fromisoformat(by_kind["event"]["timestamp"])
    assert sent.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(seconds=1) <= sent <= after  # not off by nine hours
    llm = by_kind["llm_event"]
    assert (llm["prompt_event_name"], llm["generation_event_name"]) == (
        "User prompt",
        "AI generation",
    )
    assert (llm["latency"], llm["thread_id"]) == (2, "thread-1")
    assert seen["threads"] == 1  # no thread in the application process
    assert seen["logger"] == "trubrics" and seen["custom_logger"] == "your_cool_logger"
    assert "official-snippets-key" not in seen["repr"]
    assert seen["attributes"]["api_key"] == "official-snippets-key"
    assert seen["attributes"]["flush_interval"] == "10.0"
    assert seen["attributes"]["flush_batch_size"] == "20"
    # At DEBUG, as set after construction, the user sees what happens, from both processes.
    assert "MainProcess trubrics DEBUG Event `Sign up` by user `user_id` has been added" in stderr
    assert "trubrics-mp-flusher trubrics INFO 1 events sent to Trubrics" in stderr
    assert "official-snippets-key" not in stderr


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Any:
    logger = logging.getLogger("dropin.app")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    yield logger, handler
    logger.removeHandler(handler)


def flusher_pid(client: Trubrics) -> int:
    pid = client.stats().flusher_pid
    assert pid is not None
    return pid


def test_flusher_errors_reach_the_application_handlers(
    collector: CollectorProcess, records: Any
) -> None:
    logger, handler = records
    collector.set_faults(fail_status=400, fail_count=1)
    with Trubrics("k-dropin-1", collector.url, flush_at=1, logger=logger) as client:
        client.track(user_id="u", event="e", properties={"src": "x", "seq": 0})
        assert client.flush(timeout=TIMEOUT_S) is False
        pid = flusher_pid(client)
    errors = [r for r in handler.records if r.levelno == logging.ERROR]
    assert errors, [r.getMessage() for r in handler.records]
    assert errors[0].process == pid and errors[0].processName == "trubrics-mp-flusher"
    assert "dropped 1 events for /publish_events (http_400)" in errors[0].getMessage()
    assert all(r.levelno >= logging.ERROR for r in handler.records)


def test_a_level_set_after_construction_is_honoured_by_the_flusher(
    collector: CollectorProcess, records: Any
) -> None:
    logger, handler = records
    with Trubrics("k-dropin-2", collector.url, flush_at=1, logger=logger) as client:
        logger.setLevel(logging.INFO)  # after construction, as the official page does
        client.track(user_id="u", event="e", properties={"src": "x", "seq": 0})
        assert client.flush(timeout=TIMEOUT_S)
        pid = flusher_pid(client)
    infos = [r for r in handler.records if r.levelno == logging.INFO and r.process == pid]
    assert any("1 events sent to Trubrics" in r.getMessage() for r in infos)


def test_without_a_handler_the_flusher_errors_still_reach_stderr(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    script = tmp_path / "no_handler.py"
    script.write_text(
        "import sys\n"
        "from trubrics_mp import Trubrics\n"
        "c = Trubrics('k-dropin-3', sys.argv[1], flush_at=1)\n"
        "c.track(user_id='u', event='e')\n"
        "print(c.flush(timeout=60))\n"
        "c.close()\n"
    )
    collector.set_faults(fail_status=400, fail_count=1)
    done = subprocess.run(
        [sys.executable, str(script), collector.url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    assert done.stdout.strip() == "False"
    assert "dropped 1 events for /publish_events (http_400)" in done.stderr


def test_values_the_official_sdk_clamps_are_clamped_with_a_warning(records: Any) -> None:
    logger, handler = records
    logger.setLevel(logging.WARNING)
    client = Trubrics("k", flush_batch_size=500, flush_interval=0, logger=logger, disabled=True)
    assert (client.flush_batch_size, client.flush_interval) == (100, 1.0)
    warnings = [r.getMessage() for r in handler.records if r.levelno == logging.WARNING]
    assert any("Flush batch size 500 is too high" in w for w in warnings)
    assert any("Flush interval 0 is too low" in w for w in warnings)
    client.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"flush_interval": -1}, ValueError),
        ({"flush_batch_size": 0}, ValueError),
        ({"flush_at": -5}, ValueError),
        ({"flush_interval": "10"}, TypeError),
        ({"api_key": ""}, ValueError),
    ],
)
def test_values_it_cannot_use_either_are_refused(options: dict[str, Any], error: type) -> None:
    settings = {"api_key": "k", "disabled": True, **options}
    with pytest.raises(error):
        Trubrics(**settings)


def test_a_logger_adapter_is_accepted(collector: CollectorProcess, records: Any) -> None:
    logger, handler = records
    adapter = logging.LoggerAdapter(logger, {"tenant": "t-1"})
    collector.set_faults(fail_status=400, fail_count=1)
    with Trubrics("k-dropin-4", collector.url, flush_at=1, logger=adapter) as client:
        assert client.logger is adapter
        client.track(user_id="u", event="e")
        assert client.flush(timeout=TIMEOUT_S) is False
    assert any("http_400" in r.getMessage() for r in handler.records)


def test_after_close_track_is_counted_and_nothing_starts_a_flusher(
    collector: CollectorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    client = Trubrics("k-dropin-5", collector.url)
    assert client.close(timeout=TIMEOUT_S)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    with caplog.at_level(logging.WARNING, logger="trubrics"):
        client.track(user_id="u", event="e")
        client.track(user_id="u", event="e")
    assert client.flush(timeout=5) is True  # nothing accepted was lost
    stats = client.stats()
    assert stats.dropped == {"closed": 2} and stats.flusher_pid is None
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children
    said = [r for r in caplog.records if "after close()" in r.getMessage()]
    assert len(said) == 1


def test_the_default_logger_is_the_official_one_at_error() -> None:
    code = (
        "import logging; from trubrics_mp import Trubrics; c = Trubrics('k', disabled=True); "
        "print(c.logger is logging.getLogger('trubrics'), c.logger.level)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=True
    )
    assert done.stdout.split() == ["True", str(logging.ERROR)]
