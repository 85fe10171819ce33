"""Test helper: a real ``redis-server`` (Debian's package) on a free port.

``RedisServer(tmp_path)`` starts ``redis-server --port N --bind 127.0.0.1 --save ''
--appendonly no --dir tmp_path`` (a ``support.processes.ServerProcess``, its log
on its stdout), waits for its "Ready to accept connections" line and checks that
it answers ``PING``; ``stop()`` sends SIGTERM, then SIGKILL after a deadline. It
never skips: a missing ``redis-server`` fails with a message saying how to
install it (``make test`` runs ``make system-deps``, which does).

Caveat: the free port is found by binding port 0 and closing the socket, so
another process may take it before Redis binds it; the start is then retried
on a new port (up to ``START_ATTEMPTS`` times).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional

from support.processes import ServerError, ServerProcess

START_ATTEMPTS = 5
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 20.0
HOST = "127.0.0.1"
READY = r"Ready to accept connections"


class RedisMissing(RuntimeError):
    """``redis-server`` is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 2.0) -> bool:
    """Whether a Redis server on ``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process with its files in a private directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = Path(tmp_path) / "redis"
        self.server: Optional[ServerProcess] = None
        self.port = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        if self.server is None:
            raise RuntimeError("redis-server is not running")
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissing(
                "redis-server not found: run `make system-deps` "
                "(apt-get install redis-server) before the Celery tests"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        failures = []
        for _ in range(START_ATTEMPTS):
            port = free_port()
            argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly"]
            argv += ["no", "--dir", str(self.dir)]
            server = ServerProcess(argv, name="redis-server", ready=READY, cwd=self.dir)
            try:
                server.start(START_DEADLINE_S)
            except ServerError as exc:  # port taken meanwhile: try another
                failures.append(str(exc))
                continue
            if ping(port):
                self.server, self.port = server, port
                return self
            server.stop(STOP_DEADLINE_S)
            failures.append(f"port {port}: ready, but no answer to PING\n{server.output_text}")
        raise RuntimeError("redis-server did not start:\n" + "\n".join(failures))

    def stop(self) -> Optional[int]:
        """SIGTERM, wait, SIGKILL if overdue; idempotent. Returns the exit status."""
        server, self.server = self.server, None
        return None if server is None else server.stop(STOP_DEADLINE_S)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
