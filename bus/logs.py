"""Logging set-up: every record scrubbed of secrets, aiohttp's noise about bad requests quieted."""

from __future__ import annotations

import logging

from hookbus.bus.secrets import scrub


class ScrubFilter(logging.Filter):
    """Hides every configured secret and credential-shaped text from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class BadHttpFilter(logging.Filter):
    """aiohttp logs a malformed request (the client's error, already answered 400)
    with a traceback; one line says it better."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            record.msg, record.args = "refused a malformed HTTP request: %s", (" ".join(str(error.message).split())[:200],)
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.server").addFilter(BadHttpFilter())
