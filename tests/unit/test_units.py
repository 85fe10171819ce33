"""Pure units: settings validation, serialisation, batching and retry decisions."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pytest

from trubrics_mp._batching import Batcher
from trubrics_mp._config import Config
from trubrics_mp._retry import Outcome, backoff_s, decide, parse_retry_after
from trubrics_mp._serialize import InvalidEvent, encode_event, encode_llm_event, iso_utc
from trubrics_mp._spawn import python_executable

UTC = datetime.timezone.utc


# -- settings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("api_key", "", ValueError),
        ("host", "app.trubrics.com", ValueError),
        ("host", 42, TypeError),
        ("flush_interval_s", 0, ValueError),
        ("flush_interval_s", "10", TypeError),
        ("flush_at", 0, ValueError),
        ("flush_at", 101, ValueError),
        ("flush_at", 2.5, TypeError),
        ("flush_at", True, TypeError),
        ("max_retries", -1, ValueError),
        ("max_queue_size", 10, ValueError),
        ("max_event_bytes", 10_000_000, ValueError),
        ("request_timeout_s", float("nan"), ValueError),
        ("disabled", "yes", TypeError),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(field, value, error):
    with pytest.raises(error) as info:
        Config(**{"api_key": "k", field: value})
    public_name = field.removesuffix("_s")
    assert public_name in str(info.value)


def test_settings_repr_hides_the_api_key():
    config = Config(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(config)


def test_fingerprint_ignores_logging_but_not_delivery_settings():
    base = Config(api_key="k")
    assert base.fingerprint == Config(api_key="k", logger_name="x", log_level=10).fingerprint
    assert base.fingerprint != Config(api_key="k2").fingerprint
    assert base.fingerprint != Config(api_key="k", flush_at=5).fingerprint


# -- serialisation ------------------------------------------------------------------------
def decode(data: bytes) -> dict:
    return json.loads(data)


def test_plain_event_has_the_official_keys_in_order():
    stamp = datetime.datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    event = decode(encode_event("u-1", "Sign up", {"plan": "pro"}, stamp, 65536))
    assert list(event) == ["user_id", "event", "properties", "timestamp"]
    assert event["timestamp"] == "2026-11-29T10:00:00+00:00"


def test_llm_event_has_the_official_keys_in_order():
    event = decode(
        encode_llm_event(
            user_id="u",
            prompt="p",
            generation="g",
            prompt_event_name="Prompt",
            generation_event_name="Generation",
            assistant_id=None,
            properties=None,
            timestamp=None,
            latency=1.2,
            thread_id=7,
            max_bytes=65536,
        )
    )
    assert list(event) == [
        "user_id",
        "prompt",
        "generation",
        "prompt_event_name",
        "generation_event_name",
        "assistant_id",
        "properties",
        "timestamp",
        "latency",
        "thread_id",
    ]
    assert event["thread_id"] == "7"
    assert datetime.datetime.fromisoformat(event["timestamp"]).utcoffset() is not None


def test_naive_datetimes_are_taken_as_utc_and_aware_ones_converted():
    assert iso_utc(datetime.datetime(2026, 1, 1, 12, 0)) == "2026-01-01T12:00:00+00:00"
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert iso_utc(datetime.datetime(2026, 1, 1, 13, 0, tzinfo=paris)) == (
        "2026-01-01T12:00:00+00:00"
    )


def test_values_with_an_obvious_json_form_are_converted_nested():
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    properties = {
        "when": datetime.datetime(2026, 1, 1, 12, 0),
        "day": datetime.date(2026, 1, 2),
        "id": ident,
        "cost": Decimal("0.25"),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "nested": [{"at": datetime.date(2026, 1, 3), "ids": frozenset({ident})}],
    }
    event = decode(encode_event("u", "e", properties, None, 65536))
    assert event["properties"] == {
        "when": "2026-01-01T12:00:00+00:00",
        "day": "2026-01-02",
        "id": str(ident),
        "cost": 0.25,
        "tags": ["a", "b"],
        "pair": [1, 2],
        "nested": [{"at": "2026-01-03", "ids": [str(ident)]}],
    }


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        ({"user_id": 42}, "invalid_field", "user_id must be a non-empty string, not int"),
        ({"user_id": ""}, "invalid_field", "user_id must be a non-empty string, not an empty"),
        ({"event": None}, "invalid_field", "event must be a non-empty string, not NoneType"),
        ({"properties": ["a"]}, "invalid_field", "properties must be a dict or None"),
        ({"timestamp": "2026-01-01"}, "invalid_field", "timestamp must be a datetime"),
        ({"properties": {"x": object()}}, "unserialisable", "type object cannot be sent"),
        ({"properties": {"x": float("nan")}}, "unserialisable", "Out of range float"),
        ({"properties": {"x": Decimal("Infinity")}}, "unserialisable", "not a finite number"),
        ({"properties": {"x": b"bytes"}}, "unserialisable", "type bytes cannot be sent"),
        ({"properties": {("a", 1): 1}}, "unserialisable", "keys must be"),
        ({"properties": {"x": "y" * 70_000}}, "too_large", "over the limit of 65536"),
    ],
)
def test_bad_events_are_refused_with_a_reason_and_a_message(kwargs, reason, message):
    args = {"user_id": "u", "event": "e", "properties": None, "timestamp": None, **kwargs}
    with pytest.raises(InvalidEvent) as info:
        encode_event(args["user_id"], args["event"], args["properties"], args["timestamp"], 65536)
    assert info.value.reason == reason
    assert message in str(info.value)


def test_recursive_properties_are_refused_not_crashing():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(InvalidEvent) as info:
        encode_event("u", "e", loop, None, 65536)
    assert info.value.reason == "unserialisable"


# -- batching -----------------------------------------------------------------------------
def test_a_batch_leaves_when_flush_at_events_are_there():
    batcher = Batcher(flush_at=3, flush_interval_s=10)
    assert batcher.add("publish_events", b"1", now=0.0) is None
    assert batcher.add("publish_events", b"2", now=0.1) is None
    batch = batcher.add("publish_events", b"3", now=0.2)
    assert batch is not None and batch.body() == b"[1,2,3]"
    assert len(batcher) == 0


def test_a_batch_leaves_when_its_oldest_event_is_flush_interval_old():
    batcher = Batcher(flush_at=100, flush_interval_s=10)
    batcher.add("publish_events", b"1", now=5.0)
    batcher.add("publish_llm_events", b"2", now=7.0)
    assert batcher.next_due_at() == 15.0
    assert batcher.due(now=14.9) == []
    (due,) = batcher.due(now=15.0)
    assert due.endpoint == "publish_events"
    assert batcher.next_due_at() == 17.0


def test_endpoints_are_never_mixed_and_cut_all_takes_everything():
    batcher = Batcher(flush_at=100, flush_interval_s=10)
    batcher.add("publish_events", b"1", now=0)
    batcher.add("publish_llm_events", b"2", now=0)
    batches = batcher.cut_all()
    assert sorted((b.endpoint, b.events) for b in batches) == [
        ("publish_events", [b"1"]),
        ("publish_llm_events", [b"2"]),
    ]
    assert batcher.cut_all() == [] and batcher.next_due_at() is None


# -- retry decisions ---------------------------------------------------------------------
def outcome(status, retry_after=None):
    return Outcome(status, retry_after=retry_after)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_delivered(status):
    assert decide(outcome(status), 1, 10, now=0, now_epoch_s=0, jitter=0).action == "delivered"


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_transient_failures_are_retried_with_backoff(status):
    decision = decide(outcome(status), 1, 10, now=100.0, now_epoch_s=0, jitter=0.0)
    assert decision.action == "retry"
    assert decision.retry_at == 100.0 + backoff_s(1, 0.0)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "http_400"), (401, "unauthorized"), (403, "unauthorized"), (422, "http_422")],
)
def test_other_client_errors_drop_the_batch(status, reason):
    decision = decide(outcome(status), 1, 10, now=0, now_epoch_s=0, jitter=0)
    assert (decision.action, decision.reason) == ("drop", reason)


def test_the_retry_budget_is_bounded():
    assert decide(outcome(503), 3, 3, now=0, now_epoch_s=0, jitter=0).action == "retry"
    decision = decide(outcome(503), 4, 3, now=0, now_epoch_s=0, jitter=0)
    assert (decision.action, decision.reason) == ("drop", "retries_exhausted")


def test_backoff_doubles_with_jitter_and_is_capped():
    assert [backoff_s(n, 0.999999) for n in (1, 2, 3)] == pytest.approx([0.5, 1.0, 2.0])
    assert backoff_s(1, 0.0) == 0.25  # jitter takes off up to half
    assert backoff_s(30, 0.999999) == pytest.approx(30.0)


def test_retry_after_is_honoured_in_seconds_and_as_a_date():
    decision = decide(outcome(429, "7"), 1, 10, now=100.0, now_epoch_s=0, jitter=0)
    assert decision.retry_at == 107.0
    epoch = 1_800_000_000.0
    http_date = "Fri, 15 Jan 2027 08:00:20 GMT"
    assert parse_retry_after(http_date, epoch) == 20.0
    assert parse_retry_after("garbage", epoch) is None
    assert parse_retry_after("100000", epoch) == 300.0  # capped


def test_the_flusher_finds_a_python_even_when_sys_executable_is_uwsgi(monkeypatch):
    monkeypatch.setattr("sys.executable", "/usr/local/bin/uwsgi")
    found = python_executable()
    assert "python" in found.rsplit("/", 1)[-1]


def test_a_logger_that_is_not_a_logger_is_refused():
    from trubrics_mp import Trubrics

    with pytest.raises(TypeError, match="logger must be a logging.Logger"):
        Trubrics("k", logger="my-logger")  # type: ignore[arg-type]


def test_the_senders_session_reads_proxy_settings_once(monkeypatch):
    from trubrics_mp._sender import _make_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    session = _make_session(Config(api_key="k", host="https://app.trubrics.com/api/ingestion"))
    assert session.proxies.get("https") == "http://proxy.invalid:3128"
    assert session.trust_env is False  # no per-request look-ups of env or .netrc
    assert session.headers["x-api-key"] == "k"
    bypassed = _make_session(Config(api_key="k", host="https://internal.example/ingest"))
    assert not bypassed.proxies
