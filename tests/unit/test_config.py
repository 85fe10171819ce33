"""Settings: validation with clear messages, the hidden API key, the pipeline fingerprint."""

from __future__ import annotations

from typing import Any

import pytest

from trubrics_mp._config import MIB, Config


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
        ("max_queue_bytes", 10, ValueError),
        ("max_event_bytes", 10_000_000, ValueError),
        ("request_timeout_s", float("nan"), ValueError),
        ("disabled", "yes", TypeError),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(
    field: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        Config(**{"api_key": "k", field: value})
    public_name = field.removesuffix("_s")
    assert public_name in str(info.value)


def test_settings_repr_hides_the_api_key() -> None:
    config = Config(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(config)


def test_fingerprint_names_the_flusher_wide_settings_only() -> None:
    """Clients with another key, host or batching share a flusher (their routes differ);
    another retry budget or bound needs a flusher of its own."""
    base = Config(api_key="k")
    same = [
        Config(api_key="k", logger_name="x", log_level=10),
        Config(api_key="k2", host="http://127.0.0.1:9", flush_at=5, flush_interval_s=60.0),
        Config(api_key="k", pipeline="other", linger_s=60.0),
    ]
    assert {c.fingerprint for c in same} == {base.fingerprint}
    assert base.fingerprint != Config(api_key="k", max_retries=2).fingerprint
    assert base.fingerprint != Config(api_key="k", max_queue_bytes=2 * MIB).fingerprint
