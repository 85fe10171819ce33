"""``trubrics-mp doctor``: what matters for fork safety here, one verdict per line.

Each check prints ``ok``, ``warn`` or ``FAIL``, its name and a one-line
explanation; the exit status is 1 when a check FAILs, else 0. The checks:
the Python version, the platform, the multiprocessing start method, uWSGI's
options (only inside uWSGI), whether a flusher starts and answers, and
whether the host answers an HTTP POST.

Caveats:

- The host check POSTs an empty list to ``{host}/publish_events`` with the
  key: a real API may answer it with a 4xx validation error, which still
  proves the host is reachable and the key not refused; nothing is stored.
- Outside uWSGI the uWSGI check has nothing to look at. To check a uWSGI
  server, call :func:`run_checks` from code running inside it.
- The API key is never printed: every line is scrubbed of it. Prefer
  ``$TRUBRICS_API_KEY`` to ``--api-key``, which other users can see in ``ps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import multiprocessing
import os
import platform
import re
import socket
import sys
from typing import Any, Optional, Sequence

import requests

from . import _address
from ._client import Trubrics
from ._config import DEFAULT_HOST, EVENTS_ENDPOINT
from ._redact import redact

OK, WARN, FAIL = "ok", "warn", "FAIL"
KEY_VARIABLE = "TRUBRICS_API_KEY"
PLACEHOLDER_KEY = "trubrics-mp-doctor-placeholder-key"
HTTP_TIMEOUT_S = 5.0
FLUSHER_TIMEOUT_S = 10.0
SUPPORTED = ((3, 9), (3, 13))


@dataclasses.dataclass(frozen=True)
class Check:
    """One verdict: ``ok``, ``warn`` or ``FAIL``, the check's name, an explanation."""

    verdict: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<5} {self.name:<13} {self.detail}"


def check_python(version: Optional[Sequence[int]] = None) -> Check:
    version = tuple(sys.version_info[:3]) if version is None else tuple(version)
    text = ".".join(str(part) for part in version)
    low, high = SUPPORTED
    supported = f"supported: {low[0]}.{low[1]} to {high[0]}.{high[1]}"
    if tuple(version[:2]) < low:
        return Check(FAIL, "python", f"{text} is too old ({supported})")
    if tuple(version[:2]) > high:
        return Check(WARN, "python", f"{text} is not tested ({supported})")
    return Check(OK, "python", f"{text} ({supported})")


def check_platform(system: Optional[str] = None) -> Check:
    """Linux, a private pipeline directory, and a ``SOCK_SEQPACKET`` socket bound in it."""
    system = sys.platform if system is None else system
    if not system.startswith("linux"):
        return Check(FAIL, "platform", f"{system}: trubrics-mp needs Linux (SOCK_SEQPACKET)")
    release = f"Linux {platform.release()}"
    try:
        directory = _address.runtime_dir(os.environ)
        path = os.path.join(directory, f"doctor-{os.getpid()}.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.bind(path)
            os.unlink(path)
    except OSError as exc:  # PipelineDirError says what to fix
        return Check(FAIL, "platform", f"{release}, but no pipeline socket: {exc}")
    detail = f"{release}: SOCK_SEQPACKET sockets work in {directory} (mode 700, ours)"
    return Check(OK, "platform", detail)


def check_start_method() -> Check:
    """The start method children get: the one set, or the default this Python picks."""
    chosen = multiprocessing.get_start_method(allow_none=True)
    method = chosen or multiprocessing.get_all_start_methods()[0]
    origin = "set by this program" if chosen else "the default here"
    hand_over = "hand the client to children through initializer= or args= (it pickles)"
    if method == "fork":
        detail = (
            f"fork ({origin}): forked children re-attach to the flusher by themselves;"
            f" Python 3.14 defaults to forkserver on Linux: {hand_over}"
        )
        return Check(OK, "start method", detail)
    detail = (
        f"{method} ({origin}): children re-import __main__ instead of inheriting the client:"
        f" {hand_over}, never create it at import time of __main__"
    )
    return Check(WARN, "start method", detail)


def check_uwsgi(uwsgi: Any = None) -> list[Check]:
    """uWSGI options that would lose events (only inside uWSGI)."""
    if uwsgi is None:
        try:
            uwsgi = importlib.import_module("uwsgi")
        except ImportError:
            return [Check(OK, "uwsgi", "not running under uWSGI: no option to check")]
    from .integrations.uwsgi import check_options

    raw = getattr(uwsgi, "version", b"?")
    version = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    problems = check_options(uwsgi)
    if not problems:
        return [Check(OK, "uwsgi", f"uWSGI {version}: no option that would lose events")]
    return [Check(WARN, "uwsgi", f"{key}: {message}") for key, message in problems.items()]


def check_flusher(host: str, api_key: str) -> Check:
    """Join this machine's flusher (starting one if none runs), ask it for its stats."""
    try:
        client = Trubrics(api_key, host=host, shutdown_timeout=5.0, request_timeout=5.0)
    except Exception as exc:
        return Check(FAIL, "flusher", f"no client: {type(exc).__name__}: {exc}")
    try:
        stats = client.stats()
    finally:
        closed = client.close(timeout=FLUSHER_TIMEOUT_S)
    if stats.flusher_pid is None:
        return Check(FAIL, "flusher", "the flusher process did not answer (see the logs above)")
    detail = (
        f"flusher pid {stats.flusher_pid} (restarts: {stats.flusher_restarts}) answered on"
        f" {stats.pipeline}; {stats.processes} process(es) connected, this one included"
    )
    if not closed:
        return Check(WARN, "flusher", f"{detail}; but this check's close() said False")
    return Check(OK, "flusher", detail)


def check_host(host: str, api_key: str, placeholder: bool = False) -> Check:
    """POST ``[]`` to ``{host}/publish_events``: any HTTP answer means reachable.

    Redirects are not followed (as the flusher does not follow them), so the
    API key is only sent to ``host``.
    """
    url = f"{host.rstrip('/')}/{EVENTS_ENDPOINT}"
    headers = {"Content-Type": "application/json", "x-api-key": api_key}
    try:
        response = requests.post(
            url, data=b"[]", headers=headers, timeout=HTTP_TIMEOUT_S, allow_redirects=False
        )
    except requests.Timeout:
        return Check(FAIL, "host", f"{url}: no answer within {HTTP_TIMEOUT_S:.0f} s")
    except requests.RequestException as exc:
        return Check(FAIL, "host", f"{url}: unreachable ({_reason(exc)})")
    status = response.status_code
    answered = f"{url} answered HTTP {status}"
    if status in (401, 403):
        why = "no key given, the placeholder" if placeholder else "the API key"
        return Check(WARN, "host", f"{answered}: reachable, but {why} was refused")
    if 200 <= status < 300 or status in (400, 422):
        note = " (no key given: a placeholder was sent)" if placeholder else ""
        return Check(OK, "host", f"{answered} to an empty batch: reachable{note}")
    if 300 <= status <= 399:  # never followed: the key would go wherever it points
        where = redact(response.headers.get("Location", "nowhere"), api_key)
        return Check(WARN, "host", f"{answered}, a redirect to {where}: set --host to that URL")
    if status in (404, 405):
        return Check(WARN, "host", f"{answered}: no ingestion API there? check --host")
    return Check(WARN, "host", f"{answered}: reachable, but not healthy (the flusher retries)")


def _reason(exc: BaseException) -> str:
    """A short cause (``[Errno 111] Connection refused``) of a requests error."""
    found = re.search(r"\[Errno -?\d+\] [^'\"()]+", str(exc))
    return found.group(0).strip() if found else type(exc).__name__


def run_checks(host: str, api_key: str, placeholder: bool = False) -> list[Check]:
    """Every check, in the order printed."""
    checks = [check_python(), check_platform(), check_start_method(), *check_uwsgi()]
    checks.append(check_flusher(host, api_key))
    checks.append(check_host(host, api_key, placeholder))
    return checks


def add_doctor_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``doctor``: check this environment for fork safety."""
    parser = subparsers.add_parser(
        "doctor",
        help="check this environment for what fork safety needs",
        description="One line per check with a verdict (ok, warn, FAIL): Python, platform,"
        " start method, uWSGI options, the flusher, the host. Exit status 1 if a check FAILs.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"ingestion URL ({DEFAULT_HOST})")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"key sent to the host (default ${KEY_VARIABLE}, else a placeholder); never printed",
    )
    parser.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    """Print every check; 1 if one FAILs."""
    key: Optional[str] = args.api_key or os.environ.get(KEY_VARIABLE) or None
    origin = "--api-key" if args.api_key else f"${KEY_VARIABLE}" if key else "none given"
    secret = key or ""
    checks = run_checks(args.host, key or PLACEHOLDER_KEY, placeholder=key is None)
    lines = [f"trubrics-mp doctor: host {args.host}, API key: {origin}"]
    lines += [check.line() for check in checks]
    failed = sum(check.verdict == FAIL for check in checks)
    warned = sum(check.verdict == WARN for check in checks)
    lines.append(f"{failed} FAIL, {warned} warn")
    for line in lines:
        print(line.replace(secret, "<hidden>") if secret else line)
    return 1 if failed else 0
