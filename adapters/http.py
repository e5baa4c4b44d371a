"""All outbound HTTP goes through here: one session, timeouts, a User-Agent,
`Retry-After`, the permanent-or-retryable verdict on each answer, and URLs
printed with their secrets hidden."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from hookbus import __version__
from hookbus.bus.delivery.subscriber import DeliveryError, note_answer

USER_AGENT = f"hookbus/{__version__}"
RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx


def redact_url(url: str) -> str:
    """Return the URL with credentials, path and query hidden: scheme://host[:port]/***."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    tail = "/***" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def parse_retry_after(value: str | None) -> float | None:
    """Given a Retry-After header (seconds or an HTTP date), return seconds to wait."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, body: str, url: str, headers: Mapping[str, str]) -> DeliveryError:
    """Given a non-2xx answer, return the DeliveryError saying whether to retry."""
    snippet = " ".join(body.split())[:200]
    message = f"{redact_url(url)} answered {status}" + (f": {snippet}" if snippet else "")
    retry_after = parse_retry_after(headers.get("Retry-After"))
    # Every 5xx is the receiver's trouble, not ours (507 full disk, 52x at a CDN): worth retrying.
    retryable = status in RETRYABLE_STATUS or 500 <= status <= 599
    return DeliveryError(message, permanent=not retryable, retry_after=retry_after)


class HttpClient:
    """One aiohttp session per subscriber, with a total timeout on every request."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers={"User-Agent": USER_AGENT})
        return self._session

    async def request(self, method: str, url: str, *, data: bytes | str | None = None,
                      json: Any = None, headers: Mapping[str, str] | None = None) -> tuple[int, str, Mapping[str, str]]:
        """Send a request; return (status, body text, headers) for a 2xx answer.

        Raise DeliveryError: retryable for network errors, timeouts, 408/429/5xx;
        permanent for other answers.
        """
        try:
            async with self.session().request(method, url, data=data, json=json, headers=headers, allow_redirects=True) as resp:
                text = await resp.text(errors="replace")
                note_answer(resp.status)  # for the delivery trail
                if 200 <= resp.status < 300:
                    return resp.status, text, resp.headers
                raise classify(resp.status, text, url, resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            note_answer(None)  # no answer (a redirect's, at most, before the failure)
            if isinstance(exc, aiohttp.InvalidURL):
                raise DeliveryError(f"invalid URL {redact_url(url)}", permanent=True) from None
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            raise DeliveryError(f"{redact_url(url)}: {reason}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
