"""The spool's file formats: framing and parsing, pure (bytes in, bytes out, no I/O).

A spool directory holds a ``lock`` file, segment files ``<seq>.seg`` and, beside
each segment that has acknowledgements, ``<seq>.ack`` (``seq``: 16 decimal
digits, never reused within a directory).

A segment is a sequence of records, each one group of events::

    magic      4 bytes   F5 54 53 31 (0xF5 never occurs in UTF-8, so never in an event)
    length     u32 LE    bytes of the body
    crc        u32 LE    CRC-32 of the length field and the body
    body:
      created  f64 LE    when the record was appended (seconds, the spool's clock)
      n_ep     u8        endpoint length, then the endpoint (UTF-8)
      n_route  u16 LE    route tag length, then the route tag (UTF-8)
      n_events u32 LE    then n_events u32 LE event lengths, then the events back to back

An ack file is a sequence of fixed 20-byte entries, each saying that events
``[start, stop)`` of the record at ``offset`` of its segment were delivered::

    offset u64 LE, start u32 LE, stop u32 LE, crc u32 LE (CRC-32 of the first 16 bytes)

Damage costs only what it touches. A record whose magic, length or CRC does
not check out is skipped: parsing resumes at the next magic whose record
checks out (a stretch torn at the end of a file, by a crash in the middle of
a write, is skipped the same way). Each skipped stretch counts as many
records as the magics it holds, at least one, and its bytes. An ack entry
that fails its CRC, or a torn one at the end, is ignored (counted): the
events it covered are sent again (duplicates, never losses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from typing import Optional

MAGIC = b"\xf5TS1"
HEADER = struct.Struct("<4sII")  # magic, body length, crc32(length + body)
_LENGTH = struct.Struct("<I")
_CREATED_EP = struct.Struct("<dB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
ACK = struct.Struct("<QIII")  # offset, start, stop, crc32 of the first 16 bytes
_ACK_HEAD = struct.Struct("<QII")
MAX_EVENTS = 2**32 - 1
SEGMENT_SUFFIX = ".seg"
ACK_SUFFIX = ".ack"
LOCK_NAME = "lock"


def route_tag(host: str, api_key: str) -> str:
    """The tag a record carries for its route: the host and a key id, never the key.

    The key id is 12 hexadecimal digits of the key's SHA-256: enough to tell keys
    apart, nothing to recover one from.
    """
    return f"{host} {hashlib.sha256(api_key.encode()).hexdigest()[:12]}"


def segment_name(seq: int) -> str:
    return f"{seq:016d}{SEGMENT_SUFFIX}"


def ack_name(seq: int) -> str:
    return f"{seq:016d}{ACK_SUFFIX}"


def seq_of(name: str) -> Optional[int]:
    """The sequence number of a segment or ack file name, ``None`` for any other name."""
    stem, dot, suffix = name.partition(".")
    if not dot or "." + suffix not in (SEGMENT_SUFFIX, ACK_SUFFIX):
        return None
    if len(stem) != 16 or not stem.isdigit() or not stem.isascii():
        return None
    return int(stem)


def encode_record(endpoint: str, route: str, created: float, events: list[bytes]) -> bytes:
    """One framed record; ``ValueError`` if a field does not fit its length field."""
    ep, rt = endpoint.encode(), route.encode()
    if not events or len(events) > MAX_EVENTS:
        raise ValueError("a record holds 1 to 2**32-1 events")
    if len(ep) > 255 or len(rt) > 65535:
        raise ValueError("an endpoint is at most 255 bytes, a route tag at most 65535")
    lengths = struct.pack(f"<{len(events)}I", *map(len, events))
    body = b"".join(
        (
            _CREATED_EP.pack(created, len(ep)),
            ep,
            _U16.pack(len(rt)),
            rt,
            _U32.pack(len(events)),
            lengths,
            *events,
        )
    )
    length = _LENGTH.pack(len(body))
    return b"".join((MAGIC, length, _LENGTH.pack(zlib.crc32(length + body)), body))


@dataclasses.dataclass(frozen=True)
class Record:
    """A record found in a segment; ``events_at`` is where its first event starts."""

    offset: int
    size: int
    created: float
    endpoint: str
    route: str
    lengths: tuple[int, ...]
    events_at: int

    @property
    def count(self) -> int:
        return len(self.lengths)

    def events(self, data: bytes, start: int = 0, stop: Optional[int] = None) -> list[bytes]:
        """Events ``[start, stop)`` of this record, cut from its segment's ``data``."""
        at = self.events_at + sum(self.lengths[:start])
        out = []
        for length in self.lengths[start:stop]:
            out.append(data[at : at + length])
            at += length
        return out


@dataclasses.dataclass
class Parsed:
    """What parsing a segment found: its records, and what damage cost."""

    records: list[Record]
    skipped_records: int = 0
    skipped_bytes: int = 0


def _decode_body(data: bytes, offset: int, size: int) -> Optional[Record]:
    """The record whose CRC-checked body starts at ``offset + HEADER.size``, if consistent."""
    at, end = offset + HEADER.size, offset + size
    try:
        created, n_ep = _CREATED_EP.unpack_from(data, at)
        at += _CREATED_EP.size
        endpoint = data[at : at + n_ep].decode()
        at += n_ep
        (n_rt,) = _U16.unpack_from(data, at)
        route = data[at + 2 : at + 2 + n_rt].decode()
        at += 2 + n_rt
        (count,) = _U32.unpack_from(data, at)
        lengths = struct.unpack_from(f"<{count}I", data, at + 4)
    except (struct.error, UnicodeDecodeError):
        return None
    at += 4 + 4 * count
    if count == 0 or at + sum(lengths) != end:
        return None
    return Record(offset, size, created, endpoint, route, lengths, at)


def record_at(data: bytes, offset: int) -> Optional[Record]:
    """The record at ``offset`` if its framing and CRC check out, else ``None``."""
    if len(data) - offset < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack_from(data, offset)
    size = HEADER.size + length
    if magic != MAGIC or offset + size > len(data):
        return None
    view = memoryview(data)
    if (
        zlib.crc32(
            view[offset + HEADER.size : offset + size], zlib.crc32(view[offset + 4 : offset + 8])
        )
        != crc
    ):
        return None
    return _decode_body(data, offset, size)


def parse_segment(data: bytes) -> Parsed:
    """Every intact record of a segment, in order; damaged stretches skipped and counted."""
    parsed = Parsed([])
    offset = 0
    while offset < len(data):
        record = record_at(data, offset)
        if record is not None:
            parsed.records.append(record)
            offset += record.size
            continue
        resume = _next_record(data, offset + 1)
        stretch = data[offset:resume]
        parsed.skipped_records += max(1, stretch.count(MAGIC))
        parsed.skipped_bytes += resume - offset
        offset = resume
    return parsed


def _next_record(data: bytes, start: int) -> int:
    """The offset of the next intact record at or after ``start``, else ``len(data)``."""
    at = data.find(MAGIC, start)
    while at >= 0:
        if record_at(data, at) is not None:
            return at
        at = data.find(MAGIC, at + 1)
    return len(data)


def encode_ack(offset: int, start: int, stop: int) -> bytes:
    head = _ACK_HEAD.pack(offset, start, stop)
    return head + _U32.pack(zlib.crc32(head))


def parse_acks(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """The intact ``(offset, start, stop)`` entries of an ack file, and how many were not."""
    entries = []
    bad = 1 if len(data) % ACK.size else 0
    for at in range(0, len(data) - ACK.size + 1, ACK.size):
        offset, start, stop, crc = ACK.unpack_from(data, at)
        if zlib.crc32(data[at : at + 16]) == crc and start < stop:
            entries.append((offset, start, stop))
        else:
            bad += 1
    return entries, bad
