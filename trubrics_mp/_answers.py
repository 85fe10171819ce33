"""What the flusher tells each connection: flush answers and confirmations (``K``).

A flush request is answered once every batch it covers is settled (see
``_waiters``). A confirmation tells a process how many of its events are
settled, so that it counts as ``flusher_gone`` only the others if the
flusher dies. Settled means delivered or dropped for a counted reason; with
the disk spool it also means on disk (``confirm_on_disk``), told at most
every ``DISK_CONFIRM_EVERY_S`` per connection: its process reads
confirmations every quarter second, and more would only fill its socket.
An on-disk confirmation also says how far each lane is on disk (see
``_resend``); every one owed is told before the spool deletes a segment
(``send_owed``), and at a connection's end (``confirm_at_end``).

Nothing here reads or waits: every reply is one non-blocking send
(``_reader.reply``); the main loop calls these methods and
:meth:`send_due` on its own clock.
"""

from __future__ import annotations

from typing import Callable, Optional

from . import _protocol as proto
from ._reader import Conn, reply
from ._waiters import Waiter, Waiters

DISK_CONFIRM_EVERY_S = 0.02  # at most this often a connection hears its events are on disk


class Answers:
    """The replies owed to connections; ``pending_ids`` names the batches not cut yet."""

    def __init__(
        self, waiters: Waiters[Conn], pending_ids: Callable[[], list[int]], spool: bool = False
    ) -> None:
        self.waiters = waiters
        self._pending_ids = pending_ids
        self._spool = spool
        self._disk_due: set[Conn] = set()  # owed an "on disk" confirmation

    def flush_requested(self, conn: Conn, request_id: int) -> None:
        """Answer ``conn`` once every batch unsettled now (and those not cut) is settled."""
        self.waiters.add(conn, request_id, conn.dropped == 0)
        conn.dropped = 0

    def confirm(self, conn: Conn, now: float, on_disk: bool) -> None:
        """``conn``'s events so far were taken in (``on_disk``: every one of them is in
        the spool): tell it now that they are on disk, or once they are settled."""
        if on_disk and not conn.spool_refused:
            self.confirm_on_disk(conn, now)
            return
        if self._spool and not conn.told_refused:  # it sends nothing again from now on
            conn.told_refused = reply(conn, proto.confirmed(0, conn.dropped))
        if not conn.confirming:
            self.confirm_later(conn)

    def confirm_later(self, conn: Conn) -> None:
        """Tell ``conn`` once the events it sent so far are settled."""
        conn.confirming = True
        self.waiters.add_confirmation(conn, conn.events_read, self._pending_ids())

    def lanes(self, conn: Conn) -> proto.Lanes:
        """How far each of ``conn``'s lanes is taken care of: every event it sent that
        was read is on disk, or dropped and counted by the flusher (``queue_full``,
        a bad message). None without a spool, or once the spool refused some of it."""
        if not self._spool or conn.spool_refused:
            return None
        return conn.lanes[proto.PIPE], conn.lanes[proto.SOCKET]

    def confirm_on_disk(self, conn: Conn, now: float) -> None:
        """Tell ``conn`` its events so far are on disk: now, or at its next turn."""
        conn.disk_owed = proto.confirmed(conn.events_read, conn.dropped, self.lanes(conn))
        if now >= conn.next_disk_confirm_at:
            self._tell_owed(conn, now)
        else:
            self._disk_due.add(conn)

    def _tell_owed(self, conn: Conn, now: float) -> None:
        """Send what ``conn`` is owed; if its socket is full, it stays owed."""
        conn.next_disk_confirm_at = now + DISK_CONFIRM_EVERY_S
        if reply(conn, conn.disk_owed):
            self._disk_due.discard(conn)
        else:
            self._disk_due.add(conn)

    def send_due(self, now: float) -> None:
        """The on-disk confirmations whose turn has come."""
        for conn in [c for c in self._disk_due if c.next_disk_confirm_at <= now]:
            if conn.open:
                self._tell_owed(conn, now)
            else:
                self._disk_due.discard(conn)

    def send_owed(self, now: float) -> None:
        """Every on-disk confirmation owed, now (the spool is about to delete a segment)."""
        for conn in list(self._disk_due):
            if conn.open:
                self._tell_owed(conn, now)
            else:
                self._disk_due.discard(conn)

    def confirm_at_end(self, conn: Conn) -> None:
        """``conn`` is closed by the flusher: tell it now what is on disk, if all is."""
        lanes = self.lanes(conn)
        if lanes is not None:
            reply(conn, proto.confirmed(conn.events_read, conn.dropped, lanes))
            self._disk_due.discard(conn)
        elif self._spool:  # a K without lanes: it sends nothing again
            reply(conn, proto.confirmed(0, conn.dropped))

    def next_due_at(self) -> Optional[float]:
        return min((c.next_disk_confirm_at for c in self._disk_due), default=None)

    def answer_settled(self) -> None:
        """Answer every waiter whose batches are all settled."""
        done = self.waiters.answerable()
        while done:  # a confirmation followed by a new one may be answerable at once
            for waiter in done:
                self._answer(waiter)
            done = self.waiters.answerable()

    def abandon(self) -> None:
        """The flusher leaves: every flush still waiting is answered False (events lost)."""
        for waiter in self.waiters.abandon():
            if waiter.confirms is None:
                reply(waiter.peer, proto.ack(waiter.request_id, False))

    def _answer(self, waiter: Waiter[Conn]) -> None:
        conn = waiter.peer
        if waiter.confirms is None:
            reply(conn, proto.ack(waiter.request_id, waiter.ok))
            return
        reply(conn, proto.confirmed(waiter.confirms, conn.dropped))
        conn.confirming = False
        if conn.open and conn.events_read > waiter.confirms:
            self.confirm_later(conn)
