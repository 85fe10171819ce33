"""A process's counters read from ``/proc`` (Linux): CPU time, memory, name, start.

Used for processes the reader did not start and cannot wait for, such as the
trubrics_mp flusher (a child of init or of the runner, the subreaper).
"""

from __future__ import annotations

import os
from typing import Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of utime, stime and starttime


def status_kb(pid: Optional[int], field: str) -> Optional[int]:
    """A ``/proc/PID/status`` field in kB (VmRSS, VmHWM), or None."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the name: [0] is field 3 (state)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads), in clock ticks' steps."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15: utime, stime


def parent(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def start_ticks(pid: Optional[int] = None) -> int:
    """When ``pid`` (default: this process) started, in clock ticks after boot."""
    return int(_stat_fields(pid or os.getpid())[19])  # field 22: starttime


def comm(pid: int) -> str:
    """The process's name, as ``ps`` and ``/proc/PID/comm`` show it ("" if gone)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def newest_named(name: str, started_after: int) -> Optional[int]:
    """The newest process called ``name`` started at or after ``started_after`` ticks."""
    found: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and comm(int(entry)) == name:
            try:
                started = start_ticks(int(entry))
            except (OSError, ValueError):
                continue
            if started >= started_after:
                found.append((started, int(entry)))
    return max(found)[1] if found else None
