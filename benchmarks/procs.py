"""Starting and always stopping every process a benchmark run creates.

Every process of a run (the sink, the job processes, their forked workers and
trubrics_mp flushers) inherits the environment variable ``BENCH_RUN_TAG``;
the runner also makes itself a child subreaper, so orphans (a flusher whose
owner exited) are re-parented to it. :meth:`Processes.stop_all` finds them by
both routes and stops them: SIGTERM, then SIGKILL after a deadline.

Every process also inherits ``TRUBRICS_MP_RUNTIME_DIR``, a private directory
of this run: the flushers of a run are its own. Without it a job could join a
flusher of the same settings that another run or test on the machine started
(from other code, perhaps), which the sweep could neither measure nor stop.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any, Optional

import psutil

TAG_VAR = "BENCH_RUN_TAG"
RUNTIME_DIR_VAR = "TRUBRICS_MP_RUNTIME_DIR"  # trubrics_mp._address.RUNTIME_DIR_ENV
STOP_DEADLINE_S = 10.0
_PR_SET_CHILD_SUBREAPER = 36
_LISTENING = re.compile(r"listening on (http://\S+)")


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # orphans are still found through the tag


class Processes:
    """The processes of one benchmark run; use as a context manager."""

    def __init__(self, log_dir: Path) -> None:
        self.tag = uuid.uuid4().hex
        self.log_dir = log_dir
        runtime_dir = log_dir / "pipelines"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        self.env = {
            **os.environ,
            TAG_VAR: self.tag,
            RUNTIME_DIR_VAR: str(runtime_dir),
            "PYTHONUNBUFFERED": "1",
        }
        root = str(Path(__file__).resolve().parent.parent)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.started: list[subprocess.Popen[str]] = []
        self._logs: list[IO[str]] = []

    def __enter__(self) -> Processes:
        _become_subreaper()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _log(self, name: str) -> IO[str]:
        handle = open(self.log_dir / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115
        self._logs.append(handle)
        return handle

    def start(self, args: list[str], log_name: str) -> subprocess.Popen[str]:
        """Start ``python args...`` with stdin/stdout pipes and stderr to a log file."""
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log(log_name),
            text=True,
            env=self.env,
        )
        self.started.append(proc)
        return proc

    def start_sink(self) -> tuple[subprocess.Popen[str], str]:
        proc = self.start(["-m", "benchmarks.sink", "--port", "0"], "sink")
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"the sink did not start: {line!r}")
        return proc, match.group(1)

    def run_job(
        self, spec: dict[str, Any], timeout: float, module: str = "benchmarks.jobs"
    ) -> dict[str, Any]:
        """Run ``python -m MODULE SPEC`` (a jobs module) to completion; its JSON result."""
        proc = self.start(["-m", module, json.dumps(spec)], "jobs")
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise RuntimeError(f"job {spec.get('job')} timed out after {timeout} s") from None
        finally:
            self.sweep()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"job {spec} failed (exit {proc.returncode}), see logs")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def sweep(self) -> None:
        """Stop leftovers of finished jobs (orphaned flushers, workers), keep the rest."""
        live = {p.pid for p in self.started if p.poll() is None}
        for pid in list(live):
            try:
                live.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        for proc in _tagged(self.tag):
            if proc.pid not in live:
                _terminate([proc])

    def stop_all(self) -> None:
        for proc in self.started:
            _stop(proc)
        _terminate(_tagged(self.tag))
        for handle in self._logs:
            handle.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _tagged(tag: str) -> list[psutil.Process]:
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for proc in psutil.process_iter():
        if proc.pid == me.pid or proc.pid in found:
            continue
        try:
            if proc.environ().get(TAG_VAR) == tag:
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def _terminate(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=STOP_DEADLINE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=STOP_DEADLINE_S)
    _reap_zombies()


def _reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sink_counts(sink_url: str, label: Optional[str] = None) -> Any:
    """``GET /counts`` of the sink (all labels, or one label's row or None)."""
    with urllib.request.urlopen(sink_url + "/counts", timeout=30) as response:
        counts = json.loads(response.read())
    return counts if label is None else counts.get(label)
