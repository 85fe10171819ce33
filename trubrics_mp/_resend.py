"""Closing the window at a flusher's death (issue 14): what a process sends again,
and how the next flusher tells what it already has on disk. Pure: no I/O.

With a spool, a process keeps every message it sent on a connection until the
flusher confirms it on disk. Each connection has a random token and two
lanes, the pipe and the socket, each in order; the flusher numbers the events
it reads per lane and tags each spool record with where its events came from
(:class:`Origin`). Its on-disk confirmations (``K``) say how far each lane is
on disk::

    process (Link)                           flusher (spool on)
    send(message) -> lane 0 pipe / 1 socket --> numbers each lane's events
    Unconfirmed.sent(lane, message)             Durable.keep(..., Origin(token, lane, seq))
    Unconfirmed.on_disk((p, s)) <------ K "N D p s" (everything up to p, s on disk)

    the flusher dies: Unconfirmed.resends() -> "P<token>:<lane>:<seq> <message>"
    on the next connection ---------------> next flusher: Seen.has(origin)?
                                              yes: on disk already, dropped
                                              no:  kept, tagged with that origin

What a dead flusher took with it is then only what it read and had not yet
put on disk, and what its sockets held: the process sends all of it again,
and the next flusher drops the part the spool already holds (:class:`Seen`,
built from every record on disk when it opens the spool). A message sent
again keeps its first origin, however many flushers die before one keeps it.

Caveats: the bound (``max_bytes``) lets the oldest go first; those are no
longer sent again (the process counts them as ``flusher_gone`` if the
flusher dies). :class:`Seen` lives as long as its flusher: a process that
hears of a death only after the next flusher delivered the dead one's last
records, and died too, may send those again (the few events the first put on
disk in the last ``DISK_CONFIRM_EVERY_S`` of its life): duplicates.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import re
from typing import Optional

from ._protocol import PIPE, RESEND, SOCKET

LANES = (PIPE, SOCKET)
_TAG = re.compile(r"([0-9a-f]{16}):([01]):(\d{1,19})\Z")
_RESEND_HEAD = re.compile(rb"([0-9a-f]{16}):([01]):(\d{1,19}) ")


def new_token() -> str:
    """A connection's token: 16 hexadecimal digits, random."""
    return os.urandom(8).hex()


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where an event came from: connection ``token``, ``lane``, its number there."""

    token: str
    lane: int
    seq: int

    def at(self, offset: int) -> Origin:
        """The origin of the event ``offset`` places further in the same lane."""
        return Origin(self.token, self.lane, self.seq + offset)

    @property
    def tag(self) -> str:
        return f"{self.token}:{self.lane}:{self.seq}"

    @classmethod
    def parse(cls, tag: str) -> Optional[Origin]:
        match = _TAG.match(tag)
        if match is None:
            return None
        return cls(match[1], int(match[2]), int(match[3]))


def resend(origin: Origin, message: bytes) -> bytes:
    """``message`` (an event message, its newline included) to be sent again."""
    return RESEND + origin.tag.encode() + b" " + message


def parse_resend(payload: bytes) -> Optional[tuple[Origin, bytes]]:
    """A resent message's origin and the message it carries (kind and payload, its
    newline gone); None if ``payload`` (after the kind) is not one."""
    match = _RESEND_HEAD.match(payload)
    if match is None:
        return None
    origin = Origin(match[1].decode(), int(match[2]), int(match[3]))
    return origin, payload[match.end() :].removesuffix(b"\n")


class Unconfirmed:
    """The messages a process sent on one connection, not yet confirmed on disk.

    Invariant: lane ``l`` holds the messages numbered ``first[l]`` onwards, in
    the order they entered it; ``nbytes`` is their size, at most ``max_bytes``
    (plus one message); past it, the oldest go until a quarter below it.
    Lists, trimmed by slices: a confirmation covers thousands of messages.
    """

    def __init__(self, token: str, max_bytes: int) -> None:
        self.token = token
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.let_go = 0  # messages dropped past the bound: no longer sent again
        self._lanes: tuple[list[bytes], list[bytes]] = ([], [])
        self._first = [0, 0]

    def __len__(self) -> int:
        return len(self._lanes[PIPE]) + len(self._lanes[SOCKET])

    def sent(self, lane: int, message: bytes) -> None:
        self._lanes[lane].append(message)
        self.nbytes += len(message)
        if self.nbytes > self.max_bytes:
            self._let_go()

    def _let_go(self) -> None:
        """Past the bound: drop the oldest of the longer lane, a quarter at a time,
        until a quarter below it (one slice per call, not one per send)."""
        while self.nbytes > self.max_bytes * 3 // 4 and len(self) > 1:
            longer = max(LANES, key=lambda each: len(self._lanes[each]))
            count = max(1, len(self._lanes[longer]) // 4)
            self._drop_oldest(longer, count)
            self.let_go += count

    def on_disk(self, counts: tuple[int, int]) -> None:
        """The flusher has the first ``counts[l]`` events of each lane ``l`` on disk."""
        for lane in LANES:
            self._drop_oldest(lane, counts[lane] - self._first[lane])

    def settled(self) -> None:
        """Everything sent so far is settled (a flush answered): nothing to send again."""
        for lane in LANES:
            self._drop_oldest(lane, len(self._lanes[lane]))

    def taken_back(self, count: int) -> None:
        """The newest ``count`` pipe messages came back unread: sent anew, not again."""
        pipe = self._lanes[PIPE]
        count = min(count, len(pipe))
        if count > 0:
            self.nbytes -= sum(map(len, pipe[-count:]))
            del pipe[-count:]

    def resends(self) -> list[bytes]:
        """Every message kept, as a resent message (one resent already stays as it is);
        the pipe's first. Empties the lanes."""
        out: list[bytes] = []
        for lane in LANES:
            for offset, message in enumerate(self._lanes[lane]):
                if message[:1] == RESEND:
                    out.append(message)
                else:
                    origin = Origin(self.token, lane, self._first[lane] + offset)
                    out.append(resend(origin, message))
            self._drop_oldest(lane, len(self._lanes[lane]))
        return out

    def _drop_oldest(self, lane: int, count: int) -> None:
        messages = self._lanes[lane]
        count = min(count, len(messages))
        if count > 0:
            self.nbytes -= sum(map(len, messages[:count]))
            del messages[:count]
            self._first[lane] += count


class Seen:
    """Which events of which lanes the spool holds: sorted, merged ``[start, stop)``
    runs per ``(token, lane)``."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, int], list[list[int]]] = {}

    def add(self, origin: Origin, count: int) -> None:
        runs = self._runs.setdefault((origin.token, origin.lane), [])
        start, stop = origin.seq, origin.seq + count
        if runs and runs[-1][0] <= start <= runs[-1][1]:  # the common case: what follows
            runs[-1][1] = max(runs[-1][1], stop)
            return
        at = bisect.bisect_left(runs, [start, stop])
        runs.insert(at, [start, stop])
        _merge_around(runs, at)

    def has(self, origin: Origin) -> bool:
        runs = self._runs.get((origin.token, origin.lane))
        if not runs:
            return False
        at = bisect.bisect_left(runs, [origin.seq + 1]) - 1  # the last run starting at or before
        return at >= 0 and runs[at][0] <= origin.seq < runs[at][1]

    def __len__(self) -> int:
        return len(self._runs)


def _merge_around(runs: list[list[int]], at: int) -> None:
    """Merge run ``at`` with its neighbours where they touch or overlap."""
    start = max(at - 1, 0)
    while start + 1 < len(runs):
        here, after = runs[start], runs[start + 1]
        if after[0] <= here[1]:
            here[1] = max(here[1], after[1])
            del runs[start + 1]
        elif start >= at:
            return
        else:
            start += 1
