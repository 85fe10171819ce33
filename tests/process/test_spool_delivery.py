"""The disk spool with real processes: a real flusher, the real collector (issue 14).

The client lives in the pytest process; its flusher is a real process that
the tests stop with SIGTERM or SIGKILL, as a deploy or the OOM killer would.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.processes import flushers, poll_until
from support.scenarios import track_many
from support.spool_scenarios import SpoolRunner

from trubrics_mp import Trubrics

API_KEY = "sk-spool-test-8c1e"
ClientFactory = Callable[..., Trubrics]


@pytest.fixture
def spooled_client(collector: CollectorProcess, tmp_path: Path) -> Iterator[ClientFactory]:
    made: list[Trubrics] = []

    def factory(**options: Any) -> Trubrics:
        settings = {
            "flush_at": 10,
            "flush_interval": 1.0,
            "spool_dir": str(tmp_path / "spool"),
            **options,
        }
        client = Trubrics(API_KEY, collector.url, **settings)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close(timeout=30)


def the_flusher(client: Trubrics) -> psutil.Process:
    pid = client.stats().flusher_pid
    (flusher,) = [proc for proc in flushers() if proc.pid == pid]
    return flusher


def test_a_deploy_during_an_outage_leaves_the_events_to_the_next_flusher(
    collector: CollectorProcess, spooled_client: ClientFactory
) -> None:
    """The app stops, its flusher gets SIGTERM with the API down; the next app's delivers."""
    collector.set_faults(down=True)
    old = spooled_client(shutdown_timeout=0.5, linger=0.0)
    track_many(old, "deploy", 50)
    poll_until(lambda: old.stats().spool_events == 50, 60, "50 events on disk")
    flusher = the_flusher(old)
    assert old.close(timeout=1) is False  # not delivered (yet): close() never says True
    with contextlib.suppress(psutil.NoSuchProcess):  # with nobody connected it leaves anyway
        flusher.send_signal(signal.SIGTERM)
    flusher.wait(60)
    assert old.stats(flusher=False).dropped == {}  # on disk: the process counts no loss

    collector.clear_faults()
    new = spooled_client()
    assert new.flush(timeout=60) is True
    wait_exactly_once(collector, {"deploy": 50})
    poll_until(lambda: new.stats().spool_events == 0, 60, "the spool emptied")


def test_a_flusher_killed_holding_events_on_disk_costs_none_of_them(
    collector: CollectorProcess, spooled_client: ClientFactory
) -> None:
    """SIGKILL (as the OOM killer sends it) while the API is down; the next call restarts
    the flusher, which takes the events back from disk."""
    collector.set_faults(down=True)
    client = spooled_client()
    track_many(client, "killed", 30)
    poll_until(lambda: client.stats().spool_events == 30, 60, "30 events on disk")
    flusher = the_flusher(client)
    flusher.send_signal(signal.SIGKILL)
    flusher.wait(60)
    collector.clear_faults()
    track_many(client, "after", 1)
    assert client.flush(timeout=60) is True
    wait_exactly_once(collector, {"killed": 30, "after": 1})
    stats = client.stats()
    assert stats.flusher_restarts == 1 and stats.dropped == {}


def test_what_a_killed_flusher_left_in_its_socket_and_pipe_is_sent_again_once(
    collector: CollectorProcess, spooled_client: ClientFactory
) -> None:
    """The death window, made certain: the flusher is stopped (SIGSTOP) while the process
    fills its socket (events too large for the pipe) and its pipe, then SIGKILLed. The
    process sends again what the socket held and takes back what the pipe held: the
    next flusher delivers each event once, and nothing is counted lost."""
    client = spooled_client()
    track_many(client, "before", 5)
    assert client.flush(timeout=60) is True
    flusher = the_flusher(client)
    flusher.suspend()
    for seq in range(40):  # about 6 kB each: by the socket
        properties = {"src": "large", "seq": seq, "pad": "x" * 6000}
        client.track(user_id="user-large", event="Sign up", properties=properties)
    track_many(client, "small", 500)  # by the pipe
    flusher.kill()
    flusher.wait(60)
    assert client.flush(timeout=60) is True
    wait_exactly_once(collector, {"before": 5, "large": 40, "small": 500})
    stats = client.stats()
    assert stats.dropped == {} and stats.flusher_restarts == 1
    assert stats.resent >= 1  # what the socket held at least (the rest: its process buffer)
    print(f"resent={stats.resent} on_disk={stats.spool_resent_on_disk}")


PRODUCERS, LOAD_S, KILL_EVERY_S = 3, 20.0, 2.0
TICK_S = 0.02  # producers track per_tick events every TICK_S


class Producers:
    """``count`` processes running ``support.spool_scenarios.steady``; none survives."""

    def __init__(
        self,
        collector: CollectorProcess,
        tmp_path: Path,
        count: int,
        options: dict[str, Any],
        **args: Any,
    ) -> None:
        runner = SpoolRunner(collector.url, tmp_path)
        self.apps = [
            subprocess.Popen(
                runner.command(
                    "steady",
                    src=f"p{n}",
                    options=options,
                    tick_s=TICK_S,
                    flush_timeout_s=180,
                    **args,
                ),
                env=runner.env(),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(count)
        ]

    def reports(self) -> list[dict[str, Any]]:
        """Each process's last report, once it has exited."""
        return [json.loads(app.communicate(timeout=300)[0].splitlines()[-1]) for app in self.apps]

    def __enter__(self) -> Producers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for app in self.apps:
            if app.poll() is None:
                app.kill()
                app.wait()


@pytest.mark.parametrize("api", ["up", "down"])
def test_a_flusher_killed_every_2_s_under_steady_load_loses_no_event(
    collector: CollectorProcess, tmp_path: Path, api: str
) -> None:
    """The issue's case: SIGKILL every 2 s for 20 s while 3 processes track (about 500
    events/s each), the API up, or down until the kills are over.

    Nothing is lost, and nothing is counted lost: what a flusher had read and not yet
    confirmed on disk, or left in its sockets, its processes send again (``_resend``),
    and the next flusher keeps once. With the API up, a kill during a request may leave
    a batch the API stored on disk: a duplicate, at most the requests in flight per kill
    (the collector answers after its SQLite commit, about 40 ms here: measured 640-660
    duplicates over 10 kills, about 3 batches of 20 per kill). With the API down none is
    stored, so none may be duplicated.
    """
    if api == "down":
        collector.set_faults(down=True)
    options = {"flush_at": 20, "flush_interval": 1.0, "spool_dir": str(tmp_path / "spool")}
    kills = 0
    with Producers(collector, tmp_path, PRODUCERS, options, seconds=LOAD_S, per_tick=10) as apps:
        end = time.monotonic() + LOAD_S
        while time.monotonic() < end:
            time.sleep(KILL_EVERY_S)  # pacing the kills, not waiting for a result
            for flusher in flushers():
                flusher.kill()
                kills += 1
        collector.clear_faults()
        reports = apps.reports()
    assert kills >= 5
    assert all(r["dropped"] == {} for r in reports), reports  # not even counted lost
    tracked = {r["src"]: r["tracked"] for r in reports}

    def arrived() -> dict[str, list[int]]:
        seqs: dict[str, list[int]] = {src: [] for src in tracked}
        for event in collector.events(event="steady"):
            seqs[event["properties"]["src"]].append(event["properties"]["seq"])
        return seqs

    def all_arrived() -> bool:
        seqs = arrived()
        return all(set(seqs[s]) == set(range(tracked[s])) for s in tracked)

    poll_until(all_arrived, 120, lambda: f"every event tracked: {tracked}")
    seqs = arrived()
    duplicates = sum(len(seqs[s]) - len(set(seqs[s])) for s in tracked)
    assert duplicates <= (0 if api == "down" else kills * 4 * 100), duplicates
    print(f"kills={kills} tracked={tracked} dup={duplicates}")


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "memory-only"])
def test_an_outage_of_30_minutes_is_ridden_out_with_the_spool(
    collector: CollectorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spool: bool
) -> None:
    """The API down for 30 minutes of the flusher's clock (``TRUBRICS_MP_TIME_SCALE=60``:
    30 real seconds) while 2 processes track throughout. With the spool the retry budget
    is a day: every event arrives once. Without it, 300 s: batches are dropped, counted."""
    monkeypatch.setenv("TRUBRICS_MP_TIME_SCALE", "60")
    collector.set_faults(down=True)
    options: dict[str, Any] = {"flush_at": 20, "flush_interval": 1.0}
    if spool:
        options["spool_dir"] = str(tmp_path / "spool")
    with Producers(collector, tmp_path, 2, options, seconds=30.0, per_tick=1) as apps:
        time.sleep(30.0)  # the outage, in real seconds: the library's clock runs 60x
        collector.clear_faults()
        reports = apps.reports()
    tracked = {r["src"]: r["tracked"] for r in reports}
    assert all(count >= 500 for count in tracked.values())  # tracked throughout
    if spool:
        assert all(r["flushed"] and r["dropped"] == {} for r in reports), reports
        wait_exactly_once(collector, tracked)
    else:
        dropped = sum(r["pipeline"].get("retries_exhausted", 0) for r in reports)
        assert dropped > 0 and not any(r["flushed"] for r in reports), reports
