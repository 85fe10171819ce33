"""``trubrics-mp spool status|purge DIR``: what they print and their exit status.

A spool held open in this process stands for a live flusher (its ``flock`` is
on another open file description, so the CLI's probe and lock see it taken).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trubrics_mp.__main__ import main
from trubrics_mp._spool import Spool

EP = "publish_events"


def spool_with(path: Path, count: int) -> Spool:
    spool = Spool.open(str(path))
    for n in range(count):
        assert spool.append(EP, "tag", [b'{"n":%d}' % n]).ok
    return spool


def status(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["spool", "status", "--json", str(path)]) == 0
    fields: dict[str, object] = json.loads(capsys.readouterr().out)
    return fields


def test_status_shows_events_bytes_segments_age_lock_and_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spool_with(tmp_path, 3) as spool:
        fields = status(tmp_path, capsys)
        assert fields["locked"] is True and fields["lock_pid"] is not None
        assert fields["bytes"] == spool.stats().bytes
    fields = status(tmp_path, capsys)
    assert {k: fields[k] for k in ("events", "segments", "locked", "lock_pid")} == {
        "events": 3,
        "segments": 1,
        "locked": False,
        "lock_pid": None,
    }
    assert isinstance(fields["oldest_age_s"], float)
    assert (fields["skipped_records"], fields["skipped_bytes"]) == (0, 0)
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-3])
    assert main(["spool", "status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "events           2\n" in out and "skipped_records  1\n" in out
    assert "locked           no\n" in out


def test_status_of_a_missing_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["spool", "status", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_purge_refuses_while_a_live_process_holds_the_lock_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with spool_with(tmp_path, 2):
        assert main(["spool", "purge", str(tmp_path)]) == 1
        assert "busy" in capsys.readouterr().err
        assert len(list(tmp_path.glob("*.seg"))) == 1
        assert main(["spool", "purge", "--force", str(tmp_path)]) == 0
        assert "purged 2 events" in capsys.readouterr().out
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


def test_purge_of_an_idle_spool_empties_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_with(tmp_path, 4).close()
    assert main(["spool", "purge", str(tmp_path)]) == 0
    assert "purged 4 events" in capsys.readouterr().out
    assert status(tmp_path, capsys)["events"] == 0
    assert main(["spool", "purge", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_purge_of_a_directory_others_may_write_to_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_with(tmp_path, 1).close()
    tmp_path.chmod(0o777)
    assert main(["spool", "purge", str(tmp_path)]) == 2
    assert "open_to_others" in capsys.readouterr().err
