"""One pipeline per machine: every process that makes a client joins the flusher
already running, however it was started; the flusher belongs to none of them."""

from __future__ import annotations

import collections
import subprocess
from typing import Any

from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.processes import flushers, poll_until
from support.scenarios import AppResult, AppRunner, wait_gone

from trubrics_mp.collector._store import key_id

RUN_TIMEOUT_S = 180


def _run_at_once(app: AppRunner, count: int, name: str, **args: Any) -> list[AppResult]:
    """Start ``count`` separate applications at the same instant; wait for all."""
    procs = [
        subprocess.Popen(
            app.command(name, **args),
            env=app.env(),
            cwd=app.tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        results.append(AppResult(proc.returncode, out, err))
    return results


def test_separately_started_processes_starting_at_once_share_one_flusher(
    app: AppRunner, collector: CollectorProcess
) -> None:
    results = _run_at_once(app, 8, "basic", n=25, exit="close")
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    assert len({r.get("flusher_pid") for r in results}) == 1
    assert all(r.get("closed") is True for r in results)
    assert len(collector.events()) == 8 * 25  # each tracked as "owner" 0..24
    counts = collections.Counter(
        (e["properties"]["src"], e["properties"]["seq"]) for e in collector.events()
    )
    assert set(counts.values()) == {8}  # 8 processes x the same 25 (src, seq): none lost
    poll_until(lambda: not flushers(), 60, "the flusher to leave once idle")


def test_200_clients_with_200_keys_run_on_one_flusher_and_batches_never_mix_keys(
    app: AppRunner, collector: CollectorProcess
) -> None:
    n = 200
    result = app.run("many_keys", n=n, per_client=3, timeout=RUN_TIMEOUT_S)
    assert result.get("flushed") is True and result.get("closed") is True
    assert len(result.get("flusher_pids")) == 1
    assert result.get("processes") == 1  # 200 connections of one process
    expected = {f"key-{i}": 3 for i in range(n)}
    events = wait_exactly_once(collector, expected)
    key_of_batch = {b["id"]: b["key_id"] for b in collector.batches()}
    for event in events:  # every event came in a batch sent with its own client's key
        index = event["properties"]["src"].split("-")[1]
        assert key_of_batch[event["batch_id"]] == key_id(f"sk-key-{index}")
    print(f"200 keys, one flusher: peak RSS {result.get('peak_rss_kib') / 1024:.1f} MiB")


def test_killing_the_clients_whole_process_group_spares_the_flusher(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """RQ's stop-job: the job's group is SIGKILLed right after it tracked."""
    result = app.run("group_killed", n=30, expect_rc=-9)
    flusher = result.get("flusher_pid")
    wait_exactly_once(collector, {"job": 30})
    wait_gone(flusher)  # it stayed to deliver, then left once idle


def test_processes_one_after_another_within_the_linger_share_one_flusher(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """As RQ runs one process per job: the flusher lingers between them."""
    env = {**app.env(), "TRUBRICS_MP_LINGER": "20"}
    pids = []
    for _ in range(5):
        proc = subprocess.run(
            app.command("basic", n=4, exit="close"),
            env=env,
            cwd=app.tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the flusher keeps the stderr it started with
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=True,
        )
        pids.append(AppResult(0, proc.stdout, "").get("flusher_pid"))
    assert len(set(pids)) == 1
    assert len(collector.events()) == 5 * 4
    wait_gone(pids[0])  # and it leaves by itself once the linger has passed


def test_under_a_host_that_reaps_no_zombie_is_left(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("reaping_host", runs=3, timeout=RUN_TIMEOUT_S)
    flusher_pids = result.get("flusher_pids")
    assert set(flusher_pids) <= set(result.get("reaped"))  # reparented to it, and reaped
    assert len(collector.events()) == 3 * 5
