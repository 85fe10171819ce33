"""The flusher's HTTP session."""

from __future__ import annotations

import pytest

from trubrics_mp._config import Config


def test_the_senders_session_reads_proxy_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from trubrics_mp._http import _make_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    session = _make_session(Config(api_key="k", host="https://app.trubrics.com/api/ingestion"))
    assert session.proxies.get("https") == "http://proxy.invalid:3128"
    assert session.trust_env is False  # no per-request look-ups of env or .netrc
    assert session.headers["x-api-key"] == "k"
    bypassed = _make_session(Config(api_key="k", host="https://internal.example/ingest"))
    assert not bypassed.proxies
