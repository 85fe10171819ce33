"""The shared queue: Unix ``SOCK_SEQPACKET`` sockets in Linux's abstract namespace.

Every process holds its own connection to the flusher's listening socket.
One message is one event (or one control request) and the kernel delivers it
whole or not at all, so no lock is shared between processes and a producer
killed mid-call cannot corrupt the stream. A dead flusher shows as ``EPIPE``
or ``ECONNREFUSED``; replies to ``flush()`` come back on the same ordered
connection.

The address is ``\\0trubrics-mp/<128 random bits>``: nothing on disk to clean
up. Both ends check the peer's uid (``SO_PEERCRED``), so other users on the
machine can neither feed the flusher nor pose as it.

Message kinds (first byte): ``E`` plain event JSON, ``L`` LLM event JSON,
``F`` flush request, ``S`` stats request, ``Q`` shutdown request (owner
only); replies: ``A`` flush/shutdown acknowledgement, ``S`` stats JSON.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct

EVENT = b"E"
LLM_EVENT = b"L"
FLUSH = b"F"
STATS = b"S"
SHUTDOWN = b"Q"
ACK = b"A"

SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
MAX_MESSAGE_BYTES = 256 * 1024
_CRED = struct.Struct("3i")
_REQUEST_ID = struct.Struct("!Q")
LISTEN_BACKLOG = 1024


def new_address() -> bytes:
    return b"\0trubrics-mp/" + secrets.token_hex(16).encode()


def peer_pid_uid(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    return pid, uid


def bind_listener(address: bytes) -> socket.socket:
    """Bind the flusher's socket; ``OSError(EADDRINUSE)`` means one already runs."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(address: bytes) -> socket.socket:
    """A non-blocking connection to the flusher; raises ``OSError`` if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
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


def request(kind: bytes, request_id: int) -> bytes:
    return kind + _REQUEST_ID.pack(request_id)


def parse_request_id(payload: bytes) -> int:
    """The request id at the start of a message's payload (kind byte removed)."""
    value: int = _REQUEST_ID.unpack_from(payload)[0]
    return value


def ack(request_id: int, ok: bool) -> bytes:
    return ACK + _REQUEST_ID.pack(request_id) + (b"1" if ok else b"0")


def parse_ack(payload: bytes) -> bool:
    return payload[_REQUEST_ID.size :] == b"1"


def stats_reply(request_id: int, payload: bytes) -> bytes:
    return STATS + _REQUEST_ID.pack(request_id) + payload


def stats_payload(payload: bytes) -> bytes:
    return payload[_REQUEST_ID.size :]
