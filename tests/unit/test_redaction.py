"""The API key never appears in a logged text or an exception message."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from support.serving import ServingFlusher

from trubrics_mp import Trubrics
from trubrics_mp._config import Config
from trubrics_mp._redact import RedactingFilter, Secrets, redact
from trubrics_mp._retry import Outcome

KEY = "sk-unit-secret-7f3a"


def test_redact_replaces_the_key_as_written_escaped_and_percent_encoded() -> None:
    key = "sk-a/b c\n"
    text = f"plain {key} repr {key!r} url-encoded sk-a%2Fb%20c%0A and sk-a/b%20c%0A"
    redacted = redact(text, key)
    assert "sk-a" not in redacted
    assert redacted.count("<api key>") == 4
    assert redact("nothing to hide", key) == "nothing to hide"
    assert redact("no key configured", "") == "no key configured"


def test_the_filter_redacts_arguments_and_tracebacks_of_a_record() -> None:
    try:
        raise RuntimeError(f"the server said {KEY}")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "posting with %s", (KEY,), sys.exc_info()
        )
    assert RedactingFilter(Secrets("another-key", KEY)).filter(record)
    formatted = logging.Formatter().format(record)
    assert KEY not in formatted
    assert "posting with <api key>" in formatted and "the server said <api key>" in formatted


def test_swapped_host_and_api_key_fail_without_showing_the_key() -> None:
    with pytest.raises(ValueError) as raised:
        Trubrics(api_key="https://app.trubrics.com/api/ingestion", host="secret-key")
    assert "secret-key" not in str(raised.value)
    assert "swapped" in str(raised.value)


def test_a_bad_host_is_quoted_with_the_key_redacted() -> None:
    with pytest.raises(ValueError) as raised:
        Config(api_key=KEY, host=f"app.trubrics.com/?key={KEY}")
    assert KEY not in str(raised.value)
    assert "'app.trubrics.com/?key=<api key>'" in str(raised.value)


@pytest.fixture
def serving() -> Iterator[list[ServingFlusher]]:
    made: list[ServingFlusher] = []
    yield made
    for each in made:
        each.stop()


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(422, detail=f"api key {KEY} is not allowed here"),
        Outcome(401, detail=f"unknown key {KEY}"),
        Outcome(None, detail=f"ConnectionError: could not send x-api-key {KEY}"),
    ],
)
def test_the_flusher_logs_what_the_api_said_without_the_key(
    serving: list[ServingFlusher], caplog: pytest.LogCaptureFixture, outcome: Outcome
) -> None:
    caplog.set_level(logging.DEBUG, logger="trubrics_mp")
    # flush_at=5: the one event waits for flush(), so flush() covers its batch.
    run = ServingFlusher(lambda n, e, ev: outcome, api_key=KEY, flush_at=5, max_retries=1)
    serving.append(run)
    run.track({"seq": 0})
    assert run.flush() is False
    dropped = [r.getMessage() for r in caplog.records if "dropped 1 events" in r.getMessage()]
    assert dropped and "<api key>" in dropped[0]
    assert KEY not in caplog.text
