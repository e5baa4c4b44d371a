"""slack: post each message to a Slack incoming webhook, as Block Kit.

The message's first line becomes a header block, the rest one or more section
blocks, then a context line (event type, source, time); the whole rendered text
is the top-level `text`, which Slack shows in notifications and where blocks
cannot be shown. Everything is kept within Slack's limits, cutting the body from
the front (long output keeps its end) and saying so.

Slack allows about one message per second per webhook: sends to one URL are
spaced by `RATE` seconds, process-wide. A 429 is retried after its
`Retry-After`; `invalid_payload`, `channel_not_found`, `channel_is_archived`,
`action_prohibited`, `no_service` and any other 4xx are permanent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from pydantic import field_validator

from hookbus.adapters.http import HttpClient
from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.events.event import Event
from hookbus.bus.events.text import Unit, cut_end, cut_front
from hookbus.bus.notify.messages import split_title
from hookbus.bus.notify.notifier import Notifier, NotifierConfig
from hookbus.bus.notify.templates import format_time
from hookbus.bus.secrets import mark_secret

TEXT_MAX = 40_000  # Slack truncates `text` beyond this
HEADER_MAX = 150  # header block plain_text
SECTION_MAX = 3_000  # section block text
BLOCKS_MAX = 50
CONTEXT_MAX = 300
RATE = 1.0  # seconds between two messages to one webhook URL

# What Slack's plain-text 4xx answers mean, so the dead letter says what to do.
HINTS = {
    "invalid_payload": "Slack could not read the message",
    "channel_not_found": "the webhook's channel no longer exists",
    "channel_is_archived": "the webhook's channel is archived: unarchive it or create a new webhook",
    "action_prohibited": "a workspace admin restricted posting to that channel",
    "no_service": "the webhook was removed or disabled: create a new one",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the webhook's workspace no longer exists",
    "team_disabled": "the webhook's workspace is disabled",
    "invalid_token": "the webhook URL's token is not valid",
    "posting_to_general_channel_denied": "only admins may post to that channel",
    "no_text": "the message was empty",
}


class SlackConfig(NotifierConfig):
    webhook_url: str

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be a Slack incoming-webhook URL (https://hooks.slack.com/services/…)")
        mark_secret(value)  # the path is the webhook's credential
        path = urlsplit(value).path
        if len(path) >= 8:
            mark_secret(path)
        return value


class RateLimiter:
    """Spaces messages to one URL `RATE` seconds apart, and holds a URL off after a 429."""

    def __init__(self, interval: float = RATE) -> None:
        self.interval = interval
        self.next_free: dict[str, float] = {}

    def reserve(self, url: str, max_wait: float) -> float:
        """Return how long to wait for this URL's next slot (and take it); raise a
        retryable DeliveryError instead when that is longer than `max_wait`."""
        now = time.monotonic()
        slot = max(now, self.next_free.get(url, 0.0))
        if slot - now > max_wait:
            raise DeliveryError(f"Slack rate limit: next message to this webhook in {slot - now:.0f}s",
                                retry_after=slot - now)
        self.next_free[url] = slot + self.interval
        return slot - now

    def hold_off(self, url: str, seconds: float) -> None:
        self.next_free[url] = max(self.next_free.get(url, 0.0), time.monotonic() + seconds)


LIMITER = RateLimiter()


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _split_long(line: str, size: int) -> list[str]:
    out, current, width = [], "", 0
    for ch in line:
        w = len(escape(ch))
        if width + w > size:
            out.append(current)
            current, width = "", 0
        current += ch
        width += w
    return out + ([current] if current else [])


def chunks(text: str, size: int) -> list[str]:
    """Split text into escaped pieces of at most `size` characters, at line ends where possible."""
    pieces: list[str] = []
    current, width = "", 0
    for line in text.splitlines(keepends=True):
        for part in [line] if len(escape(line)) <= size else _split_long(line, size):
            w = len(escape(part))
            if width + w > size and current:
                pieces.append(current)
                current, width = "", 0
            current += part
            width += w
    pieces.append(current)
    return [escape(p.rstrip("\n")) for p in pieces if p.strip()]


def payload(text: str, event: Event) -> dict[str, Any]:
    """Given a rendered message, return the Block Kit payload, within Slack's limits."""
    title, body = split_title(text)
    title = title or event.type
    body_room = TEXT_MAX - len(escape(title)) - 2
    body = cut_front(body, body_room, Unit.CHARACTERS, size=lambda text: len(escape(text)))  # as Slack counts it
    full = escape(title) + ("\n\n" + escape(body) if body else "")
    header = {"type": "plain_text", "text": cut_end(title, HEADER_MAX), "emoji": True}
    blocks: list[dict[str, Any]] = [{"type": "header", "text": header}]
    sections = chunks(body, SECTION_MAX)
    if len(sections) > BLOCKS_MAX - 2:
        sections = sections[-(BLOCKS_MAX - 2):]  # keep the end, as with any cut
        sections[0] = escape("…[earlier part cut]\n") + sections[0][: SECTION_MAX - 30]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]
    when = format_time(event.time) if event.time else ""
    context = " · ".join(p for p in ("hookbus", event.type, event.source, when) if p)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(cut_end(context, CONTEXT_MAX))}]})
    return {"text": full, "blocks": blocks}


class SlackSubscriber(Notifier):
    Config = SlackConfig
    config: SlackConfig

    async def start(self) -> None:
        self.http = HttpClient(timeout=self.config.timeout)

    async def deliver(self, text: str, events: list[Event]) -> None:
        url = self.config.webhook_url
        body = payload(text, events[-1])
        wait = LIMITER.reserve(url, max_wait=self.config.timeout / 2)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.http.request("POST", url, json=body)
        except DeliveryError as exc:
            if exc.retry_after is not None:  # 429: every send to this webhook waits, not just this one
                LIMITER.hold_off(url, exc.retry_after)
            hint = next((h for code, h in HINTS.items() if code in str(exc)), None)
            if hint:
                raise DeliveryError(f"{exc} ({hint})", permanent=exc.permanent, retry_after=exc.retry_after) from None
            raise

    def preview(self, event: Event) -> str:
        text = self.message(event)
        blocks = payload(text, event)["blocks"]
        return f"{text}\n\n(Slack Block Kit: {len(blocks)} blocks — header, {len(blocks) - 2} section(s), context)"

    async def close(self) -> None:
        await super().close()
        http = getattr(self, "http", None)
        if http is not None:
            await http.close()


SUBSCRIBER = SlackSubscriber
