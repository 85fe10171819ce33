"""CPU per POST of the flusher's HTTP path against the ways it could post.

``python -m benchmarks.poster_cpu [--posts N]``: starts ``benchmarks.sink``,
then, in this process, POSTs one 100-event body (about 14 kB) ``N`` times
(after 100 warm-up posts) each way, on one keep-alive connection, and prints
the process CPU (user + system, ``getrusage``) per POST:

- ``HttpPoster``: the flusher's poster (``_direct``, deadline included);
- ``requests``: a ``requests.Session`` POST as the poster made before;
- ``urllib3 pool``: an ``HTTPConnectionPool.urlopen``;
- ``http.client``: a bare ``HTTPConnection`` (the floor before ``_http1``).

One thread, loopback, no other load of ours: the figures are a floor; in the
flusher, sender threads add their own switching cost (see ``flusher_threads``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import resource
import subprocess
import sys
from typing import Callable

import requests
import urllib3

from trubrics_mp._config import Config
from trubrics_mp._http import HttpPoster

EVENT = {
    "event": "bench",
    "user_id": "u1",
    "timestamp": "2026-01-01T00:00:00.000000+00:00",
    "properties": {"a": 1, "b": "hello world", "c": [1, 2, 3]},
}
BODY = json.dumps([EVENT] * 100).encode()
HEADERS = {"Content-Type": "application/json", "x-api-key": "bench-key"}
WARM_UP = 100


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_post_ms(post: Callable[[], int], posts: int) -> float:
    for _ in range(WARM_UP):
        assert post() == 200
    started = cpu_s()
    for _ in range(posts):
        post()
    return 1e3 * (cpu_s() - started) / posts


def ways(url: str, port: int) -> dict[str, Callable[[], int]]:
    poster = HttpPoster(Config(api_key="bench-key", host=f"{url}/poster"), logging.getLogger())
    session = requests.Session()
    session.trust_env = False
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def via_requests() -> int:
        return session.post(
            f"{url}/requests/publish_events", data=BODY, headers=HEADERS
        ).status_code

    def via_pool() -> int:
        return pool.urlopen("POST", "/urllib3/publish_events", body=BODY, headers=HEADERS).status

    def via_http_client() -> int:
        conn.request("POST", "/http_client/publish_events", BODY, HEADERS)
        response = conn.getresponse()
        response.read()
        return response.status

    return {
        "HttpPoster": lambda: poster.post("publish_events", BODY).status or 0,
        "requests": via_requests,
        "urllib3 pool": via_pool,
        "http.client": via_http_client,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.poster_cpu")
    parser.add_argument("--posts", type=int, default=2000)
    args = parser.parse_args()
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        url = sink.stdout.readline().split()[-1]
        port = int(url.rsplit(":", 1)[1])
        print(f"CPU per POST of a {len(BODY):,}-byte body, {args.posts} posts each:")
        for name, post in ways(url, port).items():
            print(f"  {name:14s} {per_post_ms(post, args.posts):.3f} ms")
    finally:
        sink.terminate()
        sink.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
