"""Targets: each route's URL, headers and way out, worked out once (no request made)."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tiny_servers import TEST_CA

from trubrics_mp._config import DEFAULT_HOST, Config
from trubrics_mp._direct import tls_context
from trubrics_mp._route import Route
from trubrics_mp._targets import Targets, ca_bundle, split_url

KEY = "sk-targets-test-77a1"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Targets]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    made = Targets(Config(api_key=KEY))
    yield made
    made.close()


def route(host: str, key: str = KEY) -> Route:
    return Route(host, key, 10, 1.0)


def test_proxy_settings_are_read_once_per_route_and_no_proxy_goes_direct(
    monkeypatch: pytest.MonkeyPatch, targets: Targets
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxied = targets.get(route(DEFAULT_HOST), "publish_events")
    assert proxied.pool is None
    assert proxied.proxies.get("https") == "http://proxy.invalid:3128"
    direct = targets.get(route("https://internal.example/ingest"), "publish_events")
    assert direct.pool is not None and direct.proxies == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://changed.invalid:1")
    again = targets.get(route(DEFAULT_HOST), "publish_events")
    assert again is proxied and again.proxies.get("https") == "http://proxy.invalid:3128"


def test_routes_of_one_origin_share_a_pool_and_keep_their_own_path_and_key(
    targets: Targets,
) -> None:
    first = targets.get(route("http://127.0.0.1:9/a/ingest", "sk-first"), "publish_events")
    second = targets.get(route("http://127.0.0.1:9/b", "sk-second"), "publish_llm_events")
    other = targets.get(route("http://127.0.0.1:10/a/ingest"), "publish_events")
    assert first.pool is second.pool and first.pool is not other.pool
    paths = (first.request_path, second.request_path)
    assert paths == ("/a/ingest/publish_events", "/b/publish_llm_events")
    assert (first.headers["x-api-key"], second.headers["x-api-key"]) == ("sk-first", "sk-second")
    assert first.headers["Content-Type"] == "application/json"


def test_what_a_failed_attempt_raises_grows_with_requests_only_once_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch, targets: Targets
) -> None:
    import requests
    import urllib3

    targets.get(route("https://internal.example/ingest"), "publish_events")
    assert targets.transport_errors == (OSError, http.client.HTTPException)
    monkeypatch.setenv("NO_PROXY", "internal.example")  # variables, but no proxy applies
    monkeypatch.setenv("ftp_proxy", "http://proxy.invalid:21")
    targets.get(route("https://internal.example/other"), "publish_events")
    assert targets.transport_errors == (OSError, http.client.HTTPException)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert targets.get(route(DEFAULT_HOST), "publish_events").pool is None
    assert issubclass(urllib3.exceptions.ProtocolError, targets.transport_errors)
    assert issubclass(requests.exceptions.ChunkedEncodingError, targets.transport_errors)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/a/publish_events",
        "HTTPS://Example.COM/publish_events",
        "http://[::1]:8080/x/publish_events?q=1",
        "http://h",
        "http://h?q=1",
        "http://user:pw@h.example/p",
        "http://h.example./p",
        "http://b\u00fccher.de/x",
        "http://h.example/my api/publish_events",
        "http://h.example/a/../b/publish_events",
        "http://h.example/?q=\u00e9",
        "http://[fe80::1%25eth0]:80/x",
        "http://exa%6Dple.com/x",
    ],
)
def test_urls_split_as_urllib3_splits_them(url: str) -> None:
    """Plain URLs by the standard library, the rest by urllib3: the same parts either way."""
    import urllib3.util

    parsed = urllib3.util.parse_url(url)
    expected = (parsed.scheme, (parsed.host or "").strip("[]"), parsed.port, parsed.request_uri)
    assert split_url(url) == expected


def test_a_target_never_shows_its_key(targets: Targets) -> None:
    target = targets.get(route("https://internal.example/ingest"), "publish_events")
    assert target.headers["x-api-key"] == KEY
    assert KEY not in repr(target) and KEY not in str(target)


def test_a_direct_target_carries_its_request_head_with_its_own_key(targets: Targets) -> None:
    target = targets.get(route("http://127.0.0.1:9/a", "sk-first"), "publish_events")
    assert target.head.startswith(b"POST /a/publish_events HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert b"\r\nx-api-key: sk-first\r\n" in target.head
    assert target.head.endswith(b"\r\nContent-Length: ")  # the pool adds the length
    assert "sk-first" not in repr(target)


def test_a_key_that_cannot_go_on_the_wire_is_refused_unquoted_and_no_target_is_kept(
    targets: Targets,
) -> None:
    bad = route("http://127.0.0.1:9/x", "sk-bad\r\nX-Injected: 1")
    for _attempt in range(2):  # refused again: nothing half-made was kept for the route
        with pytest.raises(ValueError, match="CR, LF or NUL") as raised:
            targets.get(bad, "publish_events")
        assert "sk-bad" not in str(raised.value)


def test_https_origins_verify_certificates_and_host_names(tmp_path: Path) -> None:
    """Against a bundle file or a directory of certificates, as ``requests`` accepts."""
    (tmp_path / "certs").mkdir()
    for where in (str(TEST_CA), str(tmp_path / "certs")):
        context = tls_context(where)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(tls_context(str(TEST_CA)).get_ca_certs()) == 1


def test_the_ca_bundle_is_requests_own_choice() -> None:
    assert ca_bundle({"REQUESTS_CA_BUNDLE": "/a.pem", "CURL_CA_BUNDLE": "/b.pem"}) == "/a.pem"
    assert ca_bundle({"CURL_CA_BUNDLE": "/b.pem"}) == "/b.pem"
    assert ca_bundle({"REQUESTS_CA_BUNDLE": ""}).endswith(".pem")  # certifi's
