"""``python -m benchmarks [--quick] [--only STEPS] [--out DIR]``: run, write the docs.

Writes ``DIR/benchmarks.json`` (raw results), ``DIR/benchmarks.png`` and
``DIR/benchmarks.md`` (default DIR: ``docs/`` of the checkout). Logs of every
process go to a temporary directory that is printed and kept on failure.
``--only flusher_cpu,cold_burst,scaling`` runs those steps alone (the page
then shows only their sections and targets): write such a run elsewhere than
``docs/`` with ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .runner import SIZES, STEPS, run_all

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": {
            name: version(name)
            for name in ("trubrics-mp", "trubrics", "posthog", "segment-analytics-python")
        }
        | _optional_version("orjson"),
    }


def _optional_version(name: str) -> dict[str, str]:
    """``{name: version}`` of an optional package (the fast extra's orjson), or nothing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {name: version(name)}
    except PackageNotFoundError:
        return {}


def quick_sizes() -> dict[str, Any]:
    sizes = dict(SIZES)
    sizes.update(
        latency_rounds=2,
        latency_calls=2_000,
        stress_rounds=1,
        e2e_n=2_000,
        fork_n=2_000,
        fork_rounds=1,
        fork_workers=[1, 4],
        max_wait_s=30.0,
        cpu_events=5_000,
        cpu_rounds=1,
        cold_events=5_000,
        cold_runs=1,
        scaling_total=8_000,
        scaling_producers=[1, 4],
        scaling_rounds=1,
    )
    return sizes


def steps(text: str) -> tuple[str, ...]:
    """``--only``'s comma-separated step names, checked."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STEPS]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise argparse.ArgumentTypeError(f"unknown step(s) {given}; choose from {', '.join(STEPS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        type=steps,
        default=STEPS,
        metavar="STEPS",
        help=f"comma-separated steps to run (default: all): {','.join(STEPS)}",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only redraw the page and plot from OUT/benchmarks.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((args.out / "benchmarks.json").read_text(encoding="utf-8"))
        write_outputs(results, args.out)
        return 0
    sizes = quick_sizes() if args.quick else dict(SIZES)
    log_dir = Path(tempfile.mkdtemp(prefix="trubrics-mp-bench-"))
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    say(f"logs in {log_dir}")
    results = {"machine": machine()}
    try:
        results.update(run_all(log_dir, sizes, say, args.only))
    except BaseException:
        say(f"FAILED: logs kept in {log_dir}")
        raise
    results["total_seconds"] = round(time.monotonic() - started, 1)
    write_outputs(results, args.out)
    shutil.rmtree(log_dir, ignore_errors=True)
    say(f"done: {args.out / 'benchmarks.md'}")
    return 0


def write_outputs(results: dict[str, Any], out: Path) -> None:
    from .plot import plot
    from .report import render

    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, out / "benchmarks.png")
    (out / "benchmarks.md").write_text(render(results), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
