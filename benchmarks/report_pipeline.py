"""Sections 7 to 9 of ``docs/benchmarks.md`` and their targets (issue 13).

7: the flusher's CPU per delivered event; 8: a burst right after construction;
9: separately started producers sharing one flusher.
"""

from __future__ import annotations

from typing import Any, Optional

from .tables import number, ratio, table

# The flusher's CPU per delivered event "today", in µs: trubrics_mp (orjson) on main at
# 34fb7e7, before the performance work of issue 13, measured 2026-12-03 on the 2 shared cores
# (AMD EPYC) with this benchmark at full sizes: the median of 12 rounds of 100,000 events in
# 4 runs (two of ``--only flusher_cpu,cold_burst,scaling,latency``, two of ``--only
# flusher_cpu``): rounds 7.3 to 9.4 µs, run medians 7.7, 8.6, 7.7 and 8.0 µs, while other
# engineers' test suites ran on the same cores. Issue 13's target: at most half of it.
FLUSHER_CPU_BASELINE_US = 7.8
BASELINE_COMMIT = "34fb7e7"
SCALING_TARGET = 0.9  # the most producers' rate at least this times one producer's
SPOOL_TARGET = 0.7  # issue 14: throughput with the disk spool at least this times without
Target = tuple[str, str, bool]


def pipeline_targets(r: dict[str, Any]) -> list[Target]:
    rows = []
    cpu = r.get("flusher_cpu", {}).get("trubrics_mp", {}).get("us_per_event")
    if cpu is not None:
        rows.append(
            (
                f"flusher CPU per delivered event at most half of today's "
                f"({FLUSHER_CPU_BASELINE_US:.2f} µs at {BASELINE_COMMIT})",
                f"{cpu:.2f} µs: {ratio(cpu, FLUSHER_CPU_BASELINE_US):.2f}x today's",
                cpu <= FLUSHER_CPU_BASELINE_US / 2,
            )
        )
    scaling = r.get("scaling", {})
    if "1" in scaling and len(scaling) > 1:
        most = max(scaling, key=int)
        one, many = scaling["1"], scaling[most]
        share = ratio(many["events_per_s"], one["events_per_s"])
        complete = many["delivered"] == many["sent"] and many["duplicated"] == 0
        rows.append(
            (
                f"{most} producers: end to end at least {SCALING_TARGET}x the rate of 1 "
                "producer, everything delivered",
                f"{many['events_per_s']:,.0f} vs {one['events_per_s']:,.0f} events/s: "
                f"{share:.2f}x; {many['delivered']:,} / {many['sent']:,} delivered, "
                f"{many['duplicated']} duplicated",
                share >= SCALING_TARGET and complete,
            )
        )
    return rows + _spool_targets(r)


def _spool_targets(r: dict[str, Any]) -> list[Target]:
    runs = r.get("spool", {})
    if "trubrics_mp_spool" not in runs:
        return []
    plain, spool = runs["trubrics_mp"], runs["trubrics_mp_spool"]
    share = ratio(spool["events_per_s"], plain["events_per_s"])
    complete = spool["delivered"] == spool["sent"] and spool["duplicated"] == 0
    complete = complete and spool.get("spool") == "on"
    return [
        (
            f"with the disk spool: throughput at least {SPOOL_TARGET}x that without "
            f"({spool['producers']} producers), everything delivered",
            f"{spool['events_per_s']:,.0f} vs {plain['events_per_s']:,.0f} events/s: "
            f"{share:.2f}x; {spool['delivered']:,} / {spool['sent']:,} delivered, "
            f"{spool['duplicated']} duplicated",
            share >= SPOOL_TARGET and complete,
        )
    ]


def pipeline_flusher_runs(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of sections 7 to 9 that read the flusher's peak RSS."""
    runs = list(r.get("flusher_cpu", {}).values())
    runs += r.get("cold_burst", {}).get("trubrics_mp", [])
    runs += list(r.get("scaling", {}).values())
    runs += list(r.get("spool", {}).values())
    return runs


def pipeline_sections(r: dict[str, Any]) -> list[str]:
    """The sections of the steps that ran."""
    makers = (("flusher_cpu", _cpu_section), ("cold_burst", _cold_section))
    parts = [make(r) for key, make in makers if key in r]
    if "scaling" in r:
        parts.append(_scaling_section(r))
    if "spool" in r:
        parts.append(_spool_section(r))
    return parts


def _spool_section(r: dict[str, Any]) -> str:
    s, runs = r["sizes"], r["spool"]
    base = runs["trubrics_mp"]["events_per_s"]
    rows = [
        [
            peer,
            str(m.get("spool")),
            f"{m['delivered']:,} / {m['sent']:,}",
            str(m["duplicated"]),
            _rate_range(m),
            f"{ratio(m['events_per_s'], base):.2f}x",
            _mb(m.get("flusher_hwm_kb")),
        ]
        for peer, m in runs.items()
    ]
    text = (
        f"## 10. The disk spool\n\nThe rounds of section 9 with {s['spool_producers']} "
        "producers without a spool and with one (`trubrics_mp_spool`: "
        "`TRUBRICS_MP_SPOOL_DIR` set to a private directory; every event appended to disk, "
        "fsync at most every 50 ms, acknowledged once delivered), their rounds "
        "interleaved.\n\n"
    )
    header = ["peer", "spool", "delivered / sent", "duplicated", "events/s", "vs no spool"]
    return text + table(header + ["flusher peak RSS, MB"], rows)


def _rate_range(run: dict[str, Any]) -> str:
    """A scaling run's median events/s and its rounds' (min - max)."""
    low, high = run["min_events_per_s"], run["max_events_per_s"]
    return f"{run['events_per_s']:,.0f} ({low:,.0f} - {high:,.0f})"


def _mb(kb: Optional[float]) -> str:
    return "-" if not kb else f"{kb / 1024:.1f}"


def _cpu_section(r: dict[str, Any]) -> str:
    s = r["sizes"]
    rows = []
    for peer, m in r["flusher_cpu"].items():
        per_round = ", ".join(number(x["us_per_event"], 2) for x in m["rounds"])
        rows.append(
            [
                peer,
                number(m["us_per_event"], 2),
                per_round,
                f"{m['delivered']:,} / {m['sent']:,}",
                number(sum(x["flusher_cpu_s"] for x in m["rounds"]), 2),
                f"{ratio(m['us_per_event'] or 0, FLUSHER_CPU_BASELINE_US):.2f}x",
            ]
        )
    text = (
        f"## 7. Flusher CPU per delivered event\n\n{s['cpu_rounds']} rounds of "
        f"{s['cpu_events']:,} events in a tight loop from one process, then `flush()`; "
        "the flusher process's own user + system CPU (`/proc/<pid>/stat`) per event the "
        "sink received; median of the rounds. `trubrics_mp_json` tracks with the standard "
        "json encoder: the flusher does not encode, so its cost should not depend on it. "
        f"Today's: {FLUSHER_CPU_BASELINE_US:.2f} µs (commit {BASELINE_COMMIT}).\n\n"
    )
    header = ["peer", "µs / event", "rounds, µs / event", "delivered / sent"]
    return text + table([*header, "flusher CPU s", "vs today's"], rows)


def _cold_section(r: dict[str, Any]) -> str:
    rows = []
    for peer, runs in r["cold_burst"].items():
        for index, m in enumerate(runs, 1):
            dropped = ", ".join(f"{k} {v:,}" for k, v in (m.get("dropped") or {}).items())
            rows.append(
                [
                    peer,
                    str(index),
                    f"{m['delivered']:,} / {m['sent']:,}",
                    str(m["duplicated"]),
                    dropped or ("none" if "dropped" in m else "-"),
                    str(m["requests"]),
                    number(m["elapsed_s"], 3),
                    f"{m['events_per_s']:,.0f}",
                    _mb(m.get("flusher_hwm_kb")),
                ]
            )
    text = (
        f"## 8. Cold burst\n\n{r['sizes']['cold_events']:,} `track()` calls in a tight loop "
        "right after the client is made (no warm-up: the flusher of trubrics_mp is still "
        "starting), then `flush()`; each run in a fresh process with a fresh flusher. Seconds "
        "from the first `track()` to the sink's answer to the last request; dropped as the "
        "client's `stats()` counts them.\n\n"
    )
    header = ["peer", "run", "delivered / sent", "duplicated", "dropped", "requests"]
    return text + table([*header, "seconds", "events/s", "flusher peak RSS, MB"], rows)


def _scaling_section(r: dict[str, Any]) -> str:
    s, runs = r["sizes"], r["scaling"]
    base = runs["1"]["events_per_s"] if "1" in runs else 0.0
    rows = [
        [
            count,
            f"{m['share']:,}",
            f"{m['delivered']:,} / {m['sent']:,}",
            str(m["duplicated"]),
            str(sum(x["requests"] for x in m["rounds"])),
            number(m["elapsed_s"], 3),
            _rate_range(m),
            f"{ratio(m['events_per_s'], base):.2f}x",
            _mb(m.get("flusher_hwm_kb")),
        ]
        for count, m in runs.items()
    ]
    text = (
        f"## 9. Producers sharing one flusher\n\n{s['scaling_total']:,} events per round, "
        "split evenly between separately started producer processes that were connected "
        "and warmed, then released together; time from the release to the sink's answer "
        f"to the request that completed the round. {s['scaling_rounds']} rounds per count, "
        "interleaved between the counts, delivered / sent over all of them; events/s is the "
        "rounds' median (min - max).\n\n"
    )
    header = ["producers", "events each", "delivered / sent", "duplicated", "requests"]
    header += ["seconds", "events/s", "vs 1 producer", "flusher peak RSS, MB"]
    return text + table(header, rows)
