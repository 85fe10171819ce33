"""Each connection's pipe: the fast lane for small events (Linux).

A process writes an event of at most :data:`RECORD_MAX_BYTES` as one record
(its kind byte, its JSON, a newline) in one non-blocking ``write(2)``, which
the kernel makes atomic for a pipe: a record is in the pipe whole or not at
all, and a pipe write costs a fifth of a ``SOCK_SEQPACKET`` send. Larger
events, control messages and events that find the pipe full go on the
connection's socket, as before (see ``_link``). The JSON of an event never
holds a raw newline (both encoders escape control characters).

The read end goes to the flusher with the connection's first message (its
route, ``SCM_RIGHTS``). The process keeps a read end of its own, because:

- the pipe always has a reader, so a write never gets ``EPIPE`` or raises
  ``SIGPIPE`` (which a host may have set back to its default action: death);
- when the connection ends with records still in the pipe (the flusher died,
  or closed the connection after a bad message: it closes its pipe end first),
  the process takes them back (:meth:`EventPipe.take_back`) and sends them
  again, so they are neither lost nor counted as lost.

Only one side reads at a time: the flusher while the connection is open, the
process once it has ended. A pipe holds 64 KiB; one that fills up grows once
to :data:`GROWN_BYTES` (see :meth:`EventPipe.grow`). A read of
:data:`READ_BYTES` takes everything a pipe can hold, so a reader never finds
a record cut in two; one that does (a torn or foreign record) is reported to
the caller, never taken for an event.

::

    process                                  flusher
    track() --write(2), one record--> [ pipe 64 KiB-1 MiB ] --read(2), 1 MiB--> Reader
       \\---send(2): large, or pipe full--> [ socket ] --recv(2)----------> Reader
    Link._ended() <--take_back()-- (only once the connection has ended)
"""

from __future__ import annotations

import fcntl
import io
import os
import select
import stat
from typing import Optional

from . import _protocol as proto

RECORD_MAX_BYTES = select.PIPE_BUF  # 4096 on Linux: the size up to which a write is atomic
GROWN_BYTES = 1024 * 1024  # a pipe that filled up once grows to this (Linux's pipe-max-size)
READ_BYTES = GROWN_BYTES  # what a pipe holds at most, so a read takes whole records
NAP_S = 0.002  # while its writer is active, the flusher polls a pipe this often
QUIET_POLLS = 10  # then watches it again once this many polls in a row found it empty
NEWLINE = b"\n"
_EVENT_KINDS = (proto.EVENT, proto.LLM_EVENT)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Python 3.10+ names it


class EventPipe:
    """A process's pipe for one connection: the write end, and a read end kept back.

    ``writer.write(record)`` is the whole hot path (:class:`io.FileIO` refuses
    a write once closed, so another thread's ``close()`` can never make it
    write to a reused descriptor); it returns None when the pipe is full.
    """

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.read_fd = read_fd
        self.writer = io.FileIO(write_fd, "wb")
        self.grown = False  # grow() was tried

    @classmethod
    def open(cls) -> Optional[EventPipe]:
        """A new pipe, or None when the process is out of descriptors (then the
        connection carries everything, as without pipes)."""
        try:
            return cls()
        except OSError:
            return None

    def grow(self) -> bool:
        """Once, when the pipe is full: make it hold ``GROWN_BYTES``; whether it grew.

        Only a busy writer's pipe grows, so few do: grown pipes count against
        a per-user limit (``/proc/sys/fs/pipe-user-pages-soft``), past which
        the kernel refuses (then the socket takes what does not fit).
        """
        if self.grown or self.writer.closed:
            return False
        self.grown = True
        try:
            fcntl.fcntl(self.writer.fileno(), _F_SETPIPE_SZ, GROWN_BYTES)
        except OSError:
            return False
        return True

    def take_back(self) -> tuple[list[bytes], int]:
        """What the flusher did not read: the whole records (newline included),
        and how many pieces were none (a torn or foreign record, lost)."""
        chunks: list[bytes] = []
        while self.read_fd != -1:
            try:
                chunk = read_chunk(self.read_fd, bytearray(READ_BYTES))
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        pieces, rest = split_records(b"", b"".join(chunks))
        whole = [piece + NEWLINE for piece in pieces if plausible_record(piece)]
        return whole, len(pieces) - len(whole) + (1 if rest else 0)

    def close(self) -> None:
        """Close both ends this process holds (in a forked child: the child's copies)."""
        self.writer.close()
        if self.read_fd != -1:
            os.close(self.read_fd)
            self.read_fd = -1


def read_chunk(fd: int, buffer: bytearray) -> bytes:
    """One ``read(2)`` of ``fd`` into ``buffer`` (reused: ``os.read`` of a large size
    allocates, and frees, that much on every call, 10 µs); what was read."""
    size = os.readv(fd, [buffer])
    return bytes(memoryview(buffer)[:size])


def split_records(rest: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """Records of ``rest + chunk`` without their newline, and what follows the last one."""
    records = (rest + chunk if rest else chunk).split(NEWLINE)
    return records, records.pop()


def plausible_record(record: bytes) -> bool:
    """Whether a record (without its newline) has an event's shape: kind, ``{``...``}``,
    or is an event sent again (see ``_resend``)."""
    shaped = record[:1] in _EVENT_KINDS and record[1:2] == b"{" or record[:1] == proto.RESEND
    return shaped and record[-1:] == b"}"


def is_pipe(fd: int) -> bool:
    """Whether ``fd`` (received from a peer) is a pipe, as a connection's must be."""
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False
