"""The benchmark picture: four panels drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .peers import PEERS

COLORS = {
    "trubrics_mp": "#1f77b4",
    "trubrics": "#ff7f0e",
    "posthog": "#2ca02c",
    "segment": "#d62728",
}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _latency(axes[0][0], results)
    _e2e(axes[0][1], results)
    _forked(axes[1][0], results)
    _delivered(axes[1][1], results)
    machine = results["machine"]
    fig.suptitle(
        f"trubrics-mp benchmarks: {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['date']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        xs = [g + index * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        for bar, value in zip(bars, values):
            ax.annotate(
                f"{value:,.3g}",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _latency(ax: Any, results: dict[str, Any]) -> None:
    series = {
        "p50": [results["latency"][p]["p50"] for p in PEERS],
        "p99": [results["latency"][p]["p99"] for p in PEERS],
        "p99 (API 500 ms)": [results["latency_slow"][p]["p99"] for p in PEERS],
        "p99 (API down)": [results["latency_down"][p]["p99"] for p in PEERS],
    }
    _bars(ax, list(PEERS), series, "track() caller cost, µs (log)")
    ax.set_yscale("log")
    ax.set_title("1 & 6. track() cost per call (median of interleaved rounds)")


def _e2e(ax: Any, results: dict[str, Any]) -> None:
    series = {
        "instant API": [results["e2e_instant"][p]["events_per_s"] for p in PEERS],
        f"API {results['sizes']['api_ms']} ms": [
            results["e2e_slow"][p]["events_per_s"] for p in PEERS
        ],
    }
    _bars(ax, list(PEERS), series, "events delivered per second (log)")
    ax.set_yscale("log")
    ax.set_title("2. End to end, one process, batch size 100")


def _forked(ax: Any, results: dict[str, Any]) -> None:
    for peer in PEERS:
        runs = results["forked"][peer]
        xs = [int(k) for k in runs]
        ax.plot(
            xs, [runs[k]["events_per_s"] for k in runs], marker="o", label=peer, color=COLORS[peer]
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(results["sizes"]["fork_workers"])
    ax.set_xticklabels([str(w) for w in results["sizes"]["fork_workers"]])
    ax.set_xlabel("forked worker processes (client made before the fork)")
    ax.set_ylabel("events delivered per second")
    ax.set_title("3. Throughput vs processes (0 = nothing delivered)")
    ax.legend(fontsize=8)


def _delivered(ax: Any, results: dict[str, Any]) -> None:
    workers = [str(w) for w in results["sizes"]["fork_workers"]]
    series = {
        f"{w} proc": [
            100.0 * results["forked"][p][w]["delivered"] / max(1, results["forked"][p][w]["sent"])
            for p in PEERS
        ]
        for w in workers
    }
    _bars(ax, list(PEERS), series, "delivered / sent, %")
    ax.set_ylim(0, 115)
    ax.set_title("3. Delivered / sent with forked workers")
