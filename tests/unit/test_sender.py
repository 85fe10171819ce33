"""The flusher's HTTP session."""

from __future__ import annotations

import logging

import pytest

from trubrics_mp._config import DEFAULT_HOST, Config


def test_the_senders_session_reads_proxy_settings_once_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trubrics_mp._http import RequestsPoster

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    poster = RequestsPoster(Config(api_key="k"), logging.getLogger("test"))
    try:
        assert poster._session.trust_env is False  # no per-request look-ups of env or .netrc
        assert "x-api-key" not in poster._session.headers  # each request names its route's
        assert poster._proxies_for(DEFAULT_HOST).get("https") == "http://proxy.invalid:3128"
        assert poster._proxies_for("https://internal.example/ingest") == {}
        monkeypatch.setenv("HTTPS_PROXY", "http://changed.invalid:1")
        assert poster._proxies_for(DEFAULT_HOST).get("https") == "http://proxy.invalid:3128"
    finally:
        poster.close()
