"""Test helper: a real ``redis-server`` (Debian's package) on a free port.

``RedisServer(tmp_path)`` starts ``redis-server --port N --bind 127.0.0.1 --save ''
--appendonly no --dir tmp_path`` and waits until it answers ``PING``; ``stop()``
sends SIGTERM, then SIGKILL after a deadline. It never skips: a missing
``redis-server`` fails with a message saying how to install it (``make test``
runs ``make system-deps``, which does).

Caveat: the free port is found by binding port 0 and closing the socket, so
another process may take it before Redis binds it; the start is then retried
on a new port (up to ``START_ATTEMPTS`` times).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

START_ATTEMPTS = 5
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 20.0
HOST = "127.0.0.1"


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
        self.log_path = self.dir / "redis.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        if self.proc is None:
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
        for _ in range(START_ATTEMPTS):
            if self._try_start(binary, free_port()):
                return self
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def _try_start(self, binary: str, port: int) -> bool:
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.dir), "--logfile", str(self.log_path)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=self.dir)
        self.port = port
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # port taken meanwhile: try another
                self.proc = None
                return False
            if ping(port):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> Optional[int]:
        """SIGTERM, wait, SIGKILL if overdue; idempotent. Returns the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no redis log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
