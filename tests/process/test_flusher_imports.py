"""What the flusher loads: ``requests`` only once a route goes through a proxy.

The script runs the flusher's own modules and poster in a fresh interpreter
(so that nothing this test process imported counts), posts one batch, and
prints the modules of ``requests`` and urllib3 it then holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.tiny_servers import ScriptedServer

SCRIPT = """
import json, logging, sys
import trubrics_mp._flusher
from trubrics_mp._config import Config
from trubrics_mp._http import HttpPoster
poster = HttpPoster(Config(api_key="k-imports", host=sys.argv[1]), logging.getLogger("t"))
outcome = poster.post("publish_events", b"[]")
poster.close()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "urllib3"))
print(json.dumps({"status": outcome.status, "loaded": loaded}))
"""


def run_poster(url: str, **proxy: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url],
        env={**env, **proxy},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_without_a_proxy_variable_the_flusher_never_loads_requests() -> None:
    with ScriptedServer(lambda seen: (200, {}, b"{}")) as server:
        direct = run_poster(server.url)
    assert direct == {"status": 200, "loaded": []}


def test_a_route_through_a_proxy_loads_requests_and_goes_through_it() -> None:
    with ScriptedServer(lambda seen: (200, {}, b"{}")) as proxy:
        proxied = run_poster("http://api.invalid", HTTP_PROXY=proxy.url)
        assert proxy.seen and proxy.seen[0].path == "http://api.invalid/publish_events"
    assert proxied["status"] == 200
    assert "requests" in proxied["loaded"] and "urllib3" in proxied["loaded"]  # type: ignore[operator]
