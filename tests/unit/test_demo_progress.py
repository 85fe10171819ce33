"""The demo's progress line, on a terminal and on a pipe."""

from __future__ import annotations

import io

from trubrics_mp.demo.load import Progress


def test_progress_bar_rewrites_one_line_on_a_tty() -> None:
    stream = io.StringIO()
    progress = Progress(40, stream, tty=True)
    for done in range(41):
        progress.update(done, elapsed=1.0)
    progress.finish(40, elapsed=1.0)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("40/40 100%      40 req/s\n")
    assert text.count("\r") == 41


def test_progress_without_a_tty_prints_a_line_per_tenth() -> None:
    stream = io.StringIO()
    progress = Progress(40, stream, tty=False)
    for done in range(41):
        progress.update(done, elapsed=2.0)
    progress.finish(40, elapsed=2.0)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [f"{4 * i}/40" for i in range(11)]
    assert "\r" not in stream.getvalue()
