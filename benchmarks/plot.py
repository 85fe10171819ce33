"""The benchmark picture: six panels drawn with matplotlib's Agg backend.

A panel whose measurement did not run (``--only``) says so instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .peers import PEERS
from .report_pipeline import FLUSHER_CPU_BASELINE_US, SCALING_TARGET

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

    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    for ax, (draw, needs) in zip([a for row in axes for a in row], PANELS):
        if all(key in results for key in needs):
            draw(ax, results)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"not run: {', '.join(needs)}", ha="center", transform=ax.transAxes)
    machine = results["machine"]
    fig.suptitle(
        f"trubrics-mp benchmarks: {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['date']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _label_bars(ax: Any, bars: Any, labels: list[str], fontsize: int) -> None:
    """Write each label above its bar."""
    for bar, label in zip(bars, labels):
        top = bar.get_height()
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, top),
            ha="center",
            va="bottom",
            fontsize=fontsize,
        )


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        xs = [g + index * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        _label_bars(ax, bars, [f"{value:,.3g}" for value in values], fontsize=7)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _latency(ax: Any, results: dict[str, Any]) -> None:
    series = {
        "p50": [results["latency"][p]["p50"] for p in PEERS],
        "p99": [results["latency"][p]["p99"] for p in PEERS],
    }
    for key, name in (("latency_slow", "p99 (API 500 ms)"), ("latency_down", "p99 (API down)")):
        if key in results:
            series[name] = [results[key][p]["p99"] for p in PEERS]
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


def _scaling(ax: Any, results: dict[str, Any]) -> None:
    runs = results["scaling"]
    xs = [int(k) for k in runs]
    rates = [runs[k]["events_per_s"] for k in runs]
    low = [r - runs[k]["min_events_per_s"] for k, r in zip(runs, rates)]
    high = [runs[k]["max_events_per_s"] - r for k, r in zip(runs, rates)]
    color = COLORS["trubrics_mp"]
    ax.errorbar(
        xs, rates, yerr=[low, high], marker="o", capsize=3, color=color, label="trubrics_mp"
    )
    base = runs["1"]["events_per_s"] if "1" in runs else 0.0
    for k, x, rate in zip(runs, xs, rates):
        m = runs[k]
        shares = [f"{rate / base:.2f}x"] if base else []
        if m["delivered"] != m["sent"]:
            shares.append(f"{100 * m['delivered'] / m['sent']:.1f}% delivered")
        ax.annotate(
            "\n".join(shares),
            (x, rate),
            textcoords="offset points",
            xytext=(-6, 6),
            ha="right",
            fontsize=7,
        )
    if base:
        ax.axhline(SCALING_TARGET * base, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            f"target: {SCALING_TARGET}x 1 producer",
            (xs[0], SCALING_TARGET * base),
            textcoords="offset points",
            xytext=(0, -12),
            fontsize=7,
            color="grey",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlim(xs[0] / 2.2, xs[-1] * 1.3)
    ax.set_ylim(0, max(runs[k]["max_events_per_s"] for k in runs) * 1.2)
    ax.set_xlabel(f"producer processes ({results['sizes']['scaling_total']:,} events in total)")
    ax.set_ylabel("events delivered per second (median, min-max)")
    ax.set_title("9. Producers sharing one flusher, released together")
    ax.legend(fontsize=8)


def _flusher_cpu(ax: Any, results: dict[str, Any]) -> None:
    runs = results["flusher_cpu"]
    peers = list(runs)
    values = [runs[p]["us_per_event"] or 0.0 for p in peers]
    bars = ax.bar(peers, values, 0.5, color=[COLORS["trubrics_mp"], "#9ecae1"][: len(peers)])
    _label_bars(ax, bars, [f"{value:.2f}" for value in values], fontsize=8)
    if FLUSHER_CPU_BASELINE_US:
        for level, name, style in ((1, "today's", ":"), (0.5, "target: half of today's", "--")):
            y = FLUSHER_CPU_BASELINE_US * level
            ax.axhline(y, color="grey", linestyle=style, linewidth=1, label=f"{name} ({y:.2f})")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_ylim(0, max([*values, FLUSHER_CPU_BASELINE_US]) * 1.25)
    ax.set_ylabel("flusher CPU (user + system) per delivered event, µs")
    ax.set_title(f"7. Flusher CPU, {results['sizes']['cpu_events']:,} events per round")


# The panels in reading order, with the results each needs.
PANELS: list[tuple[Callable[[Any, dict[str, Any]], None], tuple[str, ...]]] = [
    (_latency, ("latency",)),
    (_e2e, ("e2e_instant", "e2e_slow")),
    (_forked, ("forked",)),
    (_delivered, ("forked",)),
    (_scaling, ("scaling",)),
    (_flusher_cpu, ("flusher_cpu",)),
]
