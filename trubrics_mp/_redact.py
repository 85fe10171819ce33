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
    if not secret:
        return text
    for form in _forms(secret):
        text = text.replace(form, MARK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter: formats each record's message and traceback, then redacts them.

    The record is changed in place (``msg`` becomes the redacted text, ``args``
    empty, the traceback moves to ``exc_text``), so every handler after this one
    sees the redacted text too.
    """

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it (handleError)
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message, self._secret)
        record.args = ()
        if record.exc_info:
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secret)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secret)
        return True
