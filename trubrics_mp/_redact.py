"""Keeping the API key out of every text this package writes (logs, exception messages).

:func:`redact` is the one function that does it; the flusher passes every text
that may carry something the API, a server or an exception said through it,
and :class:`RedactingFilter` applies it once more to whole log records (their
tracebacks included) on the flusher's own handler.

Caveats: the key is found as written, in its ``repr`` form (escapes such as
``\\n``) and percent-encoded; a key transformed otherwise (base64, split over
two lines) is not recognised. A very short key makes the scrubbed text hard
to read (every occurrence of those few characters goes), never leaky.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

MARK = "<api key>"


def _forms(secret: str) -> list[str]:
    forms = {secret, repr(secret)[1:-1], quote(secret, safe=""), quote(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)  # longest first


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``<api key>``."""
    if not secret or not text:  # most texts are empty: a delivered batch's detail
        return text
    for form in _forms(secret):
        text = text.replace(form, MARK)
    return text


class Secrets:
    """Every API key a flusher has been given (one per route), to redact them all.

    Keys are only added (by the flusher's main loop); readers in other
    threads see a complete tuple, old or new.
    """

    def __init__(self, *secrets: str) -> None:
        self._secrets: tuple[str, ...] = tuple(s for s in secrets if s)

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = (*self._secrets, secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = redact(text, secret)
        return text


class RedactingFilter(logging.Filter):
    """A handler filter: formats each record's message and traceback, then redacts them.

    The record is changed in place (``msg`` becomes the redacted text, ``args``
    empty, the traceback moves to ``exc_text``), so every handler after this one
    sees the redacted text too.
    """

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self._secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it (handleError)
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self._secrets.redact(message)
        record.args = ()
        if record.exc_info:
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._secrets.redact(record.stack_info)
        return True
