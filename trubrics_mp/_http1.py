"""HTTP/1.1 as the flusher's direct connections speak it: pure functions, no socket.

The flusher POSTs one kind of request and reads short answers. ``http.client``
spends most of a request's CPU on generality (header parsing through the
``email`` package, a buffered file per answer, header checks on every
request): on loopback, 120-150 µs of CPU per POST of a 100-event body,
against 45-50 µs for a head built once and this parser (see ``_direct`` for
``python -m benchmarks.poster_cpu``'s figures). What is kept of HTTP/1.1:

- **Request**: ``POST``, a head built once per target (:func:`request_head`,
  header values checked there: no CR, LF or NUL, Latin-1 only) and a
  ``Content-Length``; ``Accept-Encoding: identity``, so answers are never
  compressed.
- **Answer head** (:func:`parse_head`): ``HTTP/1.0`` or ``HTTP/1.1``, lines
  ending in CRLF or LF, at most :data:`MAX_HEAD_BYTES` and
  :data:`MAX_HEADERS`; interim ``1xx`` answers are skipped by the caller.
  Header names are case-insensitive; of a repeated header the first counts.
  A line that is no header (folded, no colon) is skipped, as ``http.client``
  does, and the connection is then not reused.
- **Body framing** (:attr:`Head.framing`): none (``1xx``, ``204``, ``304``),
  ``chunked``, ``Content-Length`` (a list of one repeated value too), else,
  a missing or unreadable length included, until the server closes.
- **Keep-alive** (:attr:`Head.keep_alive`): HTTP/1.1 unless
  ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``;
  never after a ``101``.

A status line that is not HTTP/1.x, a head over the limits, or a body cut
short is a :class:`BadAnswer`, which the poster reports as a failed attempt
like any connection error. Once a 2xx status line is read, the batch counts
as delivered whatever follows (see ``_http``).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Mapping
from typing import Optional

MAX_HEAD_BYTES = 65_536  # an answer's status line and headers, as http.client allows per line
MAX_HEADERS = 100  # http.client's limit
MAX_LINE_BYTES = 65_536  # a chunk-size or trailer line

NONE, LENGTH, CHUNKED, CLOSE = "none", "length", "chunked", "close"

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?\r?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n?")


class BadAnswer(http.client.HTTPException):
    """An answer the flusher cannot read as HTTP/1.x (a transport error, retried)."""


class Head:
    """An answer's status line and headers (names lowercased)."""

    __slots__ = ("version", "status", "headers", "sound")

    def __init__(
        self, version: int, status: int, headers: Mapping[str, str], sound: bool = True
    ) -> None:
        self.version = version  # 10 or 11
        self.status = status
        self.headers = headers
        self.sound = sound  # every header line was one; else the connection is not reused

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def framing(self) -> tuple[str, int]:
        """How the body ends: (``NONE``/``CHUNKED``/``CLOSE``, 0) or (``LENGTH``, bytes)."""
        if self.status < 200 or self.status in (204, 304):
            return NONE, 0
        coding = self.headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                return CHUNKED, 0
            return CLOSE, 0
        length = _length(self.headers.get("content-length"))
        if length is None:  # none, or not a length: read to the close (never reused)
            return CLOSE, 0
        return (LENGTH, length) if length else (NONE, 0)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request once the body is read."""
        if not self.sound or self.status == 101:
            return False
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == 11:
            return "close" not in tokens
        return "keep-alive" in tokens


def host_header(host: str, port: int, scheme: str) -> str:
    """``Host`` as http.client sends it: the port only when it is not the scheme's."""
    default = 443 if scheme == "https" else 80
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port == default else f"{host}:{port}"


def request_head(host: str, path: str, headers: Mapping[str, str]) -> bytes:
    """A POST's head up to and including ``Content-Length: `` (the caller adds the length).

    Raises ``ValueError`` for a path, header name or value that cannot go on
    the wire as is; the message never quotes a value (one is the API key).
    """
    if not path or any(c <= " " or c == "\x7f" for c in path):
        raise ValueError("the request path has a space or a control character")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"a header name is not a token: {name[:40]!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"the value of header {name} has a CR, LF or NUL")
        lines.append(f"{name}: {value}")
    try:
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header value is not Latin-1 (as HTTP/1.1 requires)") from None


def head_end(data: bytes) -> int:
    """The offset just past the blank line that ends a head in ``data``; -1 if none yet."""
    ends = [at + n for at, n in ((data.find(b"\n\r\n"), 3), (data.find(b"\n\n"), 2)) if at >= 0]
    return min(ends) if ends else -1


def parse_head(raw: bytes) -> Head:
    """The :class:`Head` of ``raw`` (a status line, header lines, a blank line)."""
    lines = raw.split(b"\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise BadAnswer(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    fields = [line.rstrip(b"\r") for line in lines[1:]]
    fields = [line for line in fields if line]
    if len(fields) > MAX_HEADERS:
        raise BadAnswer(f"an answer with more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    sound = True
    for line in fields:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            sound = False  # skipped, as http.client would (a folded or broken line)
            continue
        headers.setdefault(name.decode("latin-1").lower(), value.strip().decode("latin-1"))
    return Head(10 + int(match[1]), int(match[2]), headers, sound)


def _length(value: Optional[str]) -> Optional[int]:
    """A ``Content-Length``'s bytes (a list of one repeated value too); None if none."""
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        return None
    (length,) = values
    return int(length) if _DIGITS.fullmatch(length) else None


def chunk_size(line: bytes) -> int:
    """The size of a chunk from its size line (extensions ignored)."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise BadAnswer(f"not a chunk-size line: {line[:40]!r}")
    return int(match[1], 16)
