"""Logging set-up. Tokens never reach a log line: a filter masks every configured secret and any
``access_token=…`` / ``Authorization: Bearer …`` that a library might print."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_TOKEN_PATTERNS = re.compile(r"(access_token=|Bearer\s+)([A-Za-z0-9._~+/=\-]+)")


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 8:
            self._secrets.append(secret)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        return _TOKEN_PATTERNS.sub(r"\1<redacted>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


REDACTOR = RedactSecrets()


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log prints request lines, which may carry ?access_token= (legacy auth).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG: too much, and it would print texts.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
