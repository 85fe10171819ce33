"""The shared queue's wire format: every message framed and parsed here, and only here.

Every process holds its own connection to the flusher's listening socket, a
Unix ``SOCK_SEQPACKET`` socket in a private directory (see ``_address``). One message is
one event (or one control request) and the kernel delivers it whole or not at
all, so no lock is shared between processes and a producer killed while
sending cannot corrupt the stream. A dead flusher shows as ``EPIPE`` or
``ECONNREFUSED``; replies come back on the same ordered connection.

Both ends check the peer's uid (``SO_PEERCRED``), so other users on the
machine can neither feed the flusher nor pose as it, should they reach the socket.

Messages (first byte is the kind):

=========  =========================================  ==============================
kind       sent by                                    rest of the message
=========  =========================================  ==============================
``E``      a client: a plain event                    the event's JSON object, and
                                                      a newline (``END``)
``L``      a client: an LLM event                     the event's JSON object, and
                                                      a newline
``F``      a client: flush request                    request id (8 bytes)
``S``      a client: stats request                    request id
``V``      a client: its logger's effective level     the level in ASCII
``C``      a client, first on each connection: where  the connection's token (16
           its events go and how they are batched     hex digits), then its route
           (see ``_route``); with the read end of     as JSON (host, api_key,
           the connection's pipe (``SCM_RIGHTS``)     flush_at, flush_interval_s)
``P``      a client: an event sent again after a      ``token:lane:seq``, a space,
           flusher died (see ``_resend``)             the ``E`` or ``L`` message
``A``      the flusher: flush answer                  request id, ``1`` (all
                                                      delivered) or ``0``
``S``      the flusher: stats answer                  request id, stats JSON
``H``      the flusher: hello, on every new           request id 0, its
           connection                                 generation in ASCII, and
                                                      `` spool`` if its spool is on
``R``      the flusher: a log record for the          request id 0, the record
           application's logger                       as JSON (see ``_logs``)
``K``      the flusher: the first N events of this    request id 0, ``N D`` in
           connection are settled (delivered, or      ASCII: D of them are lost
           lost and counted by the flusher), or on    and no flush was told yet;
           disk                                       on disk: ``N D p s``, the
                                                      events of each lane on disk
``B``      the flusher: goodbye, just before it       request id 0, ``N D`` as for
           closes the connection as it exits          ``K`` (N is 0 when it leaves
                                                      events undelivered), or
                                                      ``N D p s``
=========  =========================================  ==============================

Events of up to ``PIPE_BUF`` bytes travel in the connection's pipe instead,
one record per event, each the same bytes as the message (see ``_pipe``);
the newline ends a record there. Control messages always use the socket, so
a flush request finds every event sent before it in the pipe or the socket.

Each connection has two lanes, each in order: the pipe (``PIPE``) and the
socket's event messages (``SOCKET``). With a spool, ``p s`` tell a process
which of the events it sent on each lane are on disk; it sends the others
again if the flusher dies (see ``_resend``).

``K`` and ``B`` let a process count what a flusher that died took with it
(see ``_link``): what it sent past the last ``K`` (or ``B``) was never
confirmed, and the D lost ones were never reported to its ``flush()``. The
flusher sends a ``K`` once the events covered by the previous one are
settled and more came since, so a connection holds at most a few unread
ones: a process that tracks reads them at its periodic check, and one that
stopped tracking gets no new ``K`` after its last events are settled.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from typing import Optional

EVENT = b"E"
LLM_EVENT = b"L"
FLUSH = b"F"
STATS = b"S"
ACK = b"A"
HELLO = b"H"
LEVEL = b"V"
ROUTE = b"C"
RECORD = b"R"
CONFIRMED = b"K"
BYE = b"B"
RESEND = b"P"
END = b"\n"  # ends every event message: a record in the pipe
PIPE, SOCKET = 0, 1  # a connection's lanes
TOKEN_BYTES = 16

EVENT_KINDS = frozenset({EVENT[0], LLM_EVENT[0], RESEND[0]})
REQUEST_KINDS = frozenset({FLUSH[0], STATS[0]})

SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
MAX_MESSAGE_BYTES = 256 * 1024
LISTEN_BACKLOG = 1024
_CRED = struct.Struct("3i")
_REQUEST_ID = struct.Struct("!Q")
_HEADER_BYTES = 1 + _REQUEST_ID.size


class ProtocolError(ValueError):
    """A message that does not have the shape its kind requires."""


@dataclasses.dataclass(frozen=True)
class Request:
    """A control request: ``kind`` is :data:`FLUSH` or :data:`STATS`."""

    kind: bytes
    request_id: int


@dataclasses.dataclass(frozen=True)
class Reply:
    """An answer from the flusher; ``body`` is what follows the request id."""

    kind: bytes
    request_id: int
    body: bytes

    @property
    def ok(self) -> bool:
        """For an ``A`` answer: whether everything it covers was delivered."""
        return self.body == b"1"


# -- sockets -------------------------------------------------------------------------
def peer_pid_uid(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    return pid, uid


def bind_listener(address: str) -> socket.socket:
    """Bind the flusher's socket; ``OSError(EADDRINUSE)`` if the path exists."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(address: str) -> socket.socket:
    """A non-blocking connection to the flusher; raises ``OSError`` if none listens.

    Connecting never blocks: a flusher whose backlog is full makes it raise
    ``BlockingIOError`` at once (the caller buffers and tries again later).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.setblocking(False)
        sock.connect(address)
        _pid, uid = peer_pid_uid(sock)
        if uid != os.getuid():
            raise PermissionError(f"the flusher socket belongs to uid {uid}, not to us")
        # The kernel caps this at net.core.wmem_max and doubles it: about twice
        # the default room for events on their way to the flusher.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# -- framing -------------------------------------------------------------------------
def request(kind: bytes, request_id: int) -> bytes:
    return kind + _REQUEST_ID.pack(request_id)


def ack(request_id: int, ok: bool) -> bytes:
    return ACK + _REQUEST_ID.pack(request_id) + (b"1" if ok else b"0")


def stats_reply(request_id: int, body: bytes) -> bytes:
    return STATS + _REQUEST_ID.pack(request_id) + body


def hello(generation: int, spool: bool) -> bytes:
    return HELLO + _REQUEST_ID.pack(0) + str(generation).encode() + (b" spool" if spool else b"")


def level(value: int) -> bytes:
    return LEVEL + str(value).encode()


def route(token: str, payload: bytes) -> bytes:
    """The first message of a connection: its token, then its route's JSON."""
    return ROUTE + token.encode() + payload


def parse_route(payload: bytes) -> tuple[str, bytes]:
    """A route message's token and route JSON (after the kind)."""
    return payload[:TOKEN_BYTES].decode("ascii", "replace"), payload[TOKEN_BYTES:]


def record(body: bytes) -> bytes:
    return RECORD + _REQUEST_ID.pack(0) + body


Lanes = Optional[tuple[int, int]]  # events on disk per lane (pipe, socket)


def confirmed(events: int, dropped: int, lanes: Lanes = None) -> bytes:
    return CONFIRMED + _REQUEST_ID.pack(0) + _counts(events, dropped, lanes)


def bye(events: int, dropped: int, lanes: Lanes = None) -> bytes:
    return BYE + _REQUEST_ID.pack(0) + _counts(events, dropped, lanes)


def _counts(events: int, dropped: int, lanes: Lanes) -> bytes:
    if lanes is None:
        return b"%d %d" % (events, dropped)
    return b"%d %d %d %d" % (events, dropped, *lanes)


# -- parsing -------------------------------------------------------------------------
def parse_request(message: bytes) -> Request:
    """A client's control request; :class:`ProtocolError` if it is not one."""
    size, kind = len(message), message[:1]
    if size != _HEADER_BYTES or kind[0] not in REQUEST_KINDS:
        raise ProtocolError(f"not a control request: {size} bytes, kind {kind!r}")
    return Request(kind, _REQUEST_ID.unpack_from(message, 1)[0])


def parse_reply(message: bytes) -> Reply:
    """A flusher's answer; :class:`ProtocolError` if it is too short to be one."""
    if len(message) < _HEADER_BYTES:
        raise ProtocolError(f"a reply of {len(message)} bytes")
    return Reply(message[:1], _REQUEST_ID.unpack_from(message, 1)[0], message[_HEADER_BYTES:])


def hello_generation(reply: Reply) -> int:
    """The generation a hello announces (0 when unreadable)."""
    generation = reply.body.partition(b" ")[0]
    return int(generation) if generation.isdigit() else 0


def hello_spool(reply: Reply) -> bool:
    """Whether a hello says the flusher's spool is on."""
    return reply.body.endswith(b" spool")


def settled_counts(reply: Reply) -> Optional[tuple[int, int, Lanes]]:
    """``(N, D, lanes)`` of a ``K`` or ``B``: events settled, lost but not yet
    reported, and on disk per lane (None when the reply does not say)."""
    fields = reply.body.split(b" ")
    if len(fields) not in (2, 4) or not all(field.isdigit() for field in fields):
        return None
    numbers = [int(field) for field in fields]
    lanes = (numbers[2], numbers[3]) if len(numbers) == 4 else None
    return numbers[0], numbers[1], lanes
