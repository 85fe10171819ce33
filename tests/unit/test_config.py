"""Settings: validation with clear messages, the hidden API key, the pipeline fingerprint."""

from __future__ import annotations

from typing import Any

import pytest

from trubrics_mp._config import Config


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


def test_fingerprint_ignores_logging_but_not_delivery_settings() -> None:
    base = Config(api_key="k")
    assert base.fingerprint == Config(api_key="k", logger_name="x", log_level=10).fingerprint
    assert base.fingerprint != Config(api_key="k2").fingerprint
    assert base.fingerprint != Config(api_key="k", flush_at=5).fingerprint
