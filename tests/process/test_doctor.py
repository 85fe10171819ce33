"""``trubrics-mp doctor``, run as a real process against real local servers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from support.collector import CollectorProcess, ListeningProcess

SCRIPT = Path(sys.executable).parent / "trubrics-mp"
UWSGI = Path(sys.executable).parent / "uwsgi"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "trubrics_mp"]
SECRET = "sk-doctor-test-0d9f4e1b7a"
RUN_TIMEOUT_S = 120
CHECKS = ("python", "platform", "start method", "uwsgi", "flusher", "host")
# A server answering every POST with 401, as an API refusing the key does.
REFUSING_SERVER = """
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"detail": "invalid api key"}'
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
"""


def doctor(
    *args: str, env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "TRUBRICS_API_KEY"}
    return subprocess.run(
        [*COMMAND, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**full_env, **(env or {})},
        cwd=cwd,
        check=False,
    )


def verdicts(output: str) -> dict[str, list[str]]:
    """{check name: [verdict, ...]} from the doctor's lines."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        match = re.match(r"^(ok|warn|FAIL) +(start method|\S+) ", line)
        if match:
            found.setdefault(match.group(2), []).append(match.group(1))
    return found


def line_of(output: str, check: str) -> str:
    return next(line for line in output.splitlines() if re.match(rf"^\S+ +{check} ", line))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


@pytest.mark.parametrize("key_from", ["option", "environment"])
def test_all_ok_against_the_collector(collector: CollectorProcess, key_from: str) -> None:
    if key_from == "option":
        result = doctor("--host", collector.url, "--api-key", SECRET)
    else:
        result = doctor("--host", collector.url, env={"TRUBRICS_API_KEY": SECRET})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = verdicts(result.stdout)
    assert set(found) == set(CHECKS), output
    assert found["flusher"] == ["ok"] and found["host"] == ["ok"], output
    assert not any(line.startswith("FAIL") for line in result.stdout.splitlines())
    assert re.fullmatch(r"0 FAIL, \d+ warn", result.stdout.splitlines()[-1])
    flusher = line_of(output, "flusher")
    assert re.search(r"flusher pid \d+ \(restarts: 0\) answered on /\S+\.sock", flusher)
    assert "1 process(es) connected, this one included" in flusher
    assert os.environ["TRUBRICS_MP_RUNTIME_DIR"] in line_of(output, "platform")
    assert f"{collector.url}/publish_events answered HTTP 422" in line_of(output, "host")
    origin = "--api-key" if key_from == "option" else "$TRUBRICS_API_KEY"
    assert f"API key: {origin}" in result.stdout.splitlines()[0]
    assert SECRET not in output and SECRET not in collector.output_text


def test_unreachable_host_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = doctor("--host", url, "--api-key", SECRET)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert verdicts(result.stdout)["host"] == ["FAIL"]
    assert "Connection refused" in line_of(output, "host")
    assert verdicts(result.stdout)["flusher"] == ["ok"]  # it starts whatever the host
    assert result.stdout.splitlines()[-1] == "1 FAIL, 0 warn"
    assert SECRET not in output


def test_a_refused_key_is_a_warning(tmp_path: Path) -> None:
    with ListeningProcess([sys.executable, "-c", REFUSING_SERVER], cwd=tmp_path) as server:
        result = doctor("--host", server.url, "--api-key", SECRET)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert verdicts(result.stdout)["host"] == ["warn"]
    assert "HTTP 401: reachable, but the API key was refused" in line_of(output, "host")
    assert SECRET not in output


def test_without_a_key_a_placeholder_is_sent(collector: CollectorProcess) -> None:
    result = doctor("--host", collector.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "API key: none given" in result.stdout.splitlines()[0]
    assert "(no key given: a placeholder was sent)" in line_of(result.stdout, "host")


def test_under_uwsgi_its_options_are_checked(tmp_path: Path, collector: CollectorProcess) -> None:
    # The doctor run inside a real uWSGI (``--pyrun``), with an option that loses events.
    script = tmp_path / "doctor_in_uwsgi.py"
    script.write_text(
        "import sys\nfrom trubrics_mp.__main__ import main\n"
        "status = main(['doctor', '--host', sys.argv[1]])\n"
        "print(f'DOCTOR-EXIT {status}', flush=True)\n"
    )
    argv = [str(UWSGI), "--master", "--die-on-term", "--skip-atexit", "--virtualenv", sys.prefix]
    argv += ["--pyrun", str(script), "--pyargv", collector.url]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "TRUBRICS_API_KEY": SECRET},
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "DOCTOR-EXIT 0" in output, output  # warnings only
    found = verdicts(output)
    assert found["uwsgi"] == ["warn"] and found["flusher"] == ["ok"], output
    assert "skip-atexit: " in line_of(output, "uwsgi")  # die-on-term is set: no other warning
    assert found["host"] == ["ok"], output
    assert SECRET not in output


def test_a_host_that_never_answers_fails_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = doctor("--host", url, "--api-key", SECRET)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert verdicts(result.stdout)["host"] == ["FAIL"]
    assert "no answer within 5 s" in line_of(output, "host")
    assert SECRET not in output
