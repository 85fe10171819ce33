"""Runs every measurement against one sink and returns the raw results.

Sizes are chosen so that a full run takes about five minutes on two cores;
``--quick`` divides them for a smoke run; ``--only`` runs some of the steps
(:data:`STEPS`). Every process is stopped at the end, on error too (see
:mod:`benchmarks.procs`).
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from .peers import LATENCY_PEERS, PEERS
from .procs import Processes, sink_counts
from .scaling import Group, run_interleaved

SIZES: dict[str, Any] = {
    "latency_rounds": 7,
    "latency_calls": 10_000,
    "stress_rounds": 3,
    "burst": 100,
    "pause_s": 0.005,
    "e2e_n": 10_000,
    "fork_n": 40_000,  # 3: per run, split between the workers
    "fork_rounds": 3,
    "fork_workers": [1, 2, 4, 8],
    "slow_ms": 500,
    "api_ms": 50,
    "idle_s": 3.0,
    "max_wait_s": 90.0,
    "memory_tracks": 1_000,
    "cpu_events": 100_000,  # 7: per round; the flusher's CPU is read in 10 ms ticks
    "cpu_rounds": 3,
    "cold_events": 100_000,  # 8: per run, right after construction
    "cold_runs": 3,
    "scaling_total": 160_000,  # 9: per round, split evenly between the producers
    "scaling_producers": [1, 2, 4, 8, 16],
    "scaling_rounds": 5,  # 9 and 10: interleaved between the groups
    "spool_producers": 4,  # 10: the scaling rounds, without and with a disk spool
}
# The steps in the order they run (``--only`` takes a comma-separated subset).
STEPS = (
    "latency",
    "latency_slow",
    "latency_down",
    "e2e_instant",
    "e2e_slow",
    "forked",
    "memory",
    "flusher_cpu",
    "cold_burst",
    "scaling",
    "spool",
)
CPU_PEERS = ("trubrics_mp", "trubrics_mp_json")
COLD_PEERS = ("trubrics_mp", "trubrics")
JOB_TIMEOUT_S = 300.0
PERCENTILES = ("p50", "p99", "p999")
PIPELINE_JOBS = "benchmarks.pipeline_jobs"
Progress = Callable[[str], None]


class Bench:
    def __init__(self, procs: Processes, sink: str, sizes: dict[str, Any], say: Progress) -> None:
        self.procs = procs
        self.sink = sink
        self.sizes = sizes
        self.say = say
        self._labels = 0

    def label(self, *parts: object) -> str:
        self._labels += 1
        return "-".join(str(p) for p in (*parts, self._labels))

    def host(self, label: str, delay_ms: int = 0) -> str:
        return f"{self.sink}/d{delay_ms}/{label}" if delay_ms else f"{self.sink}/{label}"

    # -- 1 and 6: track() cost, interleaved rounds -----------------------------------
    def latency(self, mode: str, rounds: int) -> dict[str, Any]:
        """Rounds of timed track() calls, peer A, peer B, ... repeated; medians of rounds."""
        peers = LATENCY_PEERS if mode == "normal" else PEERS
        servers = {peer: self._start_latency(peer, mode) for peer in peers}
        per_round: dict[str, list[dict[str, float]]] = {peer: [] for peer in peers}
        try:
            for index in range(rounds):
                self.say(f"  {mode} round {index + 1}/{rounds}")
                for peer, (proc, _) in servers.items():
                    per_round[peer].append(_ask(proc, "round"))
            finals = {peer: _ask(proc, "quit") for peer, (proc, _) in servers.items()}
        finally:
            for proc, _ in servers.values():
                _close(proc)
            self.procs.sweep()
        out: dict[str, Any] = {}
        for peer in peers:
            label = servers[peer][1]
            row = sink_counts(self.sink, label) if mode == "normal" else None
            out[peer] = {
                "rounds": per_round[peer],
                **{k: statistics.median(r[k] for r in per_round[peer]) for k in PERCENTILES},
                "sent": finals[peer].get("sent"),
                "delivered": None if row is None else row["events"] - 1,
            }
        return out

    def _start_latency(self, peer: str, mode: str) -> tuple[subprocess.Popen[str], str]:
        label = self.label("lat", mode, peer)
        host = {
            "normal": self.host(label),
            "slow": self.host(label, self.sizes["slow_ms"]),
            "down": f"http://127.0.0.1:{closed_port()}/{label}",
        }[mode]
        spec = {
            "job": "latency",
            "peer": peer,
            "mode": mode,
            "host": host,
            "sink": self.sink,
            "label": label,
            "calls": self.sizes["latency_calls"],
            "burst": self.sizes["burst"],
            "pause_s": self.sizes["pause_s"],
            "shutdown_s": 10.0 if mode == "normal" else 2.0,
        }
        proc = self.procs.start(["-m", "benchmarks.jobs", json.dumps(spec)], "jobs")
        _ask(proc, None)  # wait for "ready"
        return proc, label

    # -- 2 and 4: one process, end to end ----------------------------------------------
    def e2e(self, delay_ms: int) -> dict[str, Any]:
        out = {}
        for peer in PEERS:
            label = self.label("e2e", delay_ms, peer)
            self.say(f"  end to end, API {delay_ms} ms: {peer}")
            out[peer] = self._job("e2e", peer, label, delay_ms, n=self.sizes["e2e_n"])
        return out

    # -- 3: forked workers ---------------------------------------------------------------
    def forked(self) -> dict[str, Any]:
        """``fork_rounds`` runs per peer and worker count, interleaved; see :func:`_median_run`."""
        counts = [str(w) for w in self.sizes["fork_workers"]]
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            peer: {w: [] for w in counts} for peer in PEERS
        }
        rounds = self.sizes["fork_rounds"]
        for index in range(rounds):
            for workers in counts:
                for peer in PEERS:
                    self.say(f"  {workers} forked workers: {peer}, round {index + 1}/{rounds}")
                    runs[peer][workers].append(self._fork_run(peer, int(workers)))
        return {peer: {w: _median_run(r) for w, r in got.items()} for peer, got in runs.items()}

    def _fork_run(self, peer: str, workers: int) -> dict[str, Any]:
        label = self.label("fork", workers, peer)
        return self._job("fork", peer, label, 0, n=self.sizes["fork_n"], workers=workers)

    # -- 5: memory ----------------------------------------------------------------------
    def memory(self) -> dict[str, Any]:
        bare = [self.procs.run_job({"job": "memory"}, JOB_TIMEOUT_S)["rss_kb"] for _ in range(3)]
        out: dict[str, Any] = {"bare_worker_rss_kb": statistics.median(bare)}
        for peer in PEERS:
            self.say(f"  memory: {peer}")
            label = self.label("mem", peer)
            row = self._job("memory", peer, label, 0, tracks=self.sizes["memory_tracks"])
            row["added_kb"] = row["rss_kb"] - out["bare_worker_rss_kb"]
            out[peer] = row
        return out

    # -- 7: the flusher's CPU per delivered event ----------------------------------------
    def flusher_cpu(self) -> dict[str, Any]:
        out = {}
        for peer in CPU_PEERS:
            self.say(f"  flusher CPU: {peer}")
            out[peer] = self._job(
                "flusher_cpu",
                peer,
                self.label("cpu", peer),
                0,
                module=PIPELINE_JOBS,
                n=self.sizes["cpu_events"],
                rounds=self.sizes["cpu_rounds"],
            )
        return out

    # -- 8: a burst right after construction ---------------------------------------------
    def cold_burst(self) -> dict[str, Any]:
        """``cold_runs`` runs per peer, interleaved; a fresh flusher every time."""
        out: dict[str, Any] = {peer: [] for peer in COLD_PEERS}
        for index in range(self.sizes["cold_runs"]):
            for peer in COLD_PEERS:
                self.say(f"  cold burst {index + 1}/{self.sizes['cold_runs']}: {peer}")
                label = self.label("cold", peer)
                out[peer].append(
                    self._job(
                        "cold_burst",
                        peer,
                        label,
                        0,
                        module=PIPELINE_JOBS,
                        n=self.sizes["cold_events"],
                    )
                )
        return out

    # -- 9: separately started producers -------------------------------------------------
    def scaling(self) -> dict[str, Any]:
        counts = self.sizes["scaling_producers"]
        groups = [Group(str(n), self.label("scale", n), n) for n in counts]
        return run_interleaved(self.procs, self.sink, groups, self.sizes, self.say)

    # -- 10: the same with a disk spool -------------------------------------------------
    def spool(self) -> dict[str, Any]:
        count = self.sizes["spool_producers"]
        groups = [
            Group(peer, self.label("spool", peer, count), count, peer)
            for peer in ("trubrics_mp", "trubrics_mp_spool")
        ]
        return run_interleaved(self.procs, self.sink, groups, self.sizes, self.say)

    def _job(
        self,
        job: str,
        peer: str,
        label: str,
        delay_ms: int,
        module: str = "benchmarks.jobs",
        **extra: Any,
    ) -> dict[str, Any]:
        spec = {
            "job": job,
            "peer": peer,
            "host": self.host(label, delay_ms),
            "sink": self.sink,
            "label": label,
            "idle_s": self.sizes["idle_s"],
            "max_wait_s": self.sizes["max_wait_s"],
            **extra,
        }
        started = time.monotonic()
        result = self.procs.run_job(spec, JOB_TIMEOUT_S, module)
        result["job_wall_s"] = time.monotonic() - started
        return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median events/s, with counts and CPU summed over all the runs.

    Delivered / sent (requests, worker exits) then cover every run, and CPU
    per event sent averages them; the rate, the time and the wall time are
    the median run's.
    """
    ordered = sorted(runs, key=lambda run: float(run["events_per_s"]))
    median = dict(ordered[(len(ordered) - 1) // 2])
    for key in ("sent", "delivered", "duplicated", "requests", "empty_requests", "cpu_s"):
        median[key] = sum(run[key] for run in runs)
    median["worker_exits"] = [code for run in runs for code in run["worker_exits"]]
    peaks = [run["flusher_hwm_kb"] for run in runs if run.get("flusher_hwm_kb")]
    median["flusher_hwm_kb"] = max(peaks) if peaks else None
    median["rounds_events_per_s"] = [run["events_per_s"] for run in runs]
    return median


def closed_port() -> int:
    """A port nobody listens on (bound, then released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ask(proc: subprocess.Popen[str], command: Any) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    if command is not None:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a latency job exited early (exit {proc.wait()}), see logs")
    reply: dict[str, Any] = json.loads(line)
    return reply


def _close(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_all(
    log_dir: Path, sizes: dict[str, Any], say: Progress, only: tuple[str, ...] = STEPS
) -> dict[str, Any]:
    """The measurements named in ``only`` (default: all); raw results as a JSON-able dict."""
    results: dict[str, Any] = {"sizes": sizes}
    with Processes(log_dir) as procs:
        _, sink = procs.start_sink()
        bench = Bench(procs, sink, sizes, say)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("latency", lambda: bench.latency("normal", sizes["latency_rounds"])),
            ("latency_slow", lambda: bench.latency("slow", sizes["stress_rounds"])),
            ("latency_down", lambda: bench.latency("down", sizes["stress_rounds"])),
            ("e2e_instant", lambda: bench.e2e(0)),
            ("e2e_slow", lambda: bench.e2e(sizes["api_ms"])),
            ("forked", bench.forked),
            ("memory", bench.memory),
            ("flusher_cpu", bench.flusher_cpu),
            ("cold_burst", bench.cold_burst),
            ("scaling", bench.scaling),
            ("spool", bench.spool),
        ]
        assert tuple(name for name, _ in steps) == STEPS
        for name, step in steps:
            if name not in only:
                continue
            say(f"{name} ...")
            started = time.monotonic()
            results[name] = step()
            results.setdefault("step_seconds", {})[name] = round(time.monotonic() - started, 1)
    return results
