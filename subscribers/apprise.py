"""apprise: send each message to Apprise URLs (Telegram, Discord, e-mail, ntfy,
Matrix, …: every service Apprise knows), from `urls` or an Apprise `config` file.

Each URL is its own Apprise service, notified on its own: Apprise's `notify()`
over several services only says whether all of them succeeded, so a retry
would send again to those that already had the message. Here a retry goes only
to the services that failed, and the error names each of them (by position,
never by URL: Apprise URLs carry tokens and passwords).

The message's first line is the title, the rest the body; the notify type is
success, warning, failure or info after the event. Each service's own limits
(`title_maxlen`, `body_maxlen`, `body_max_line_count`) are applied before Apprise
sees the message, cutting the body from the front (long output keeps its end)
and saying so. Apprise's `notify()` blocks (it uses `requests`), so it runs in
a worker thread, one per service.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from pydantic import field_validator, model_validator

from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.events.event import Event
from hookbus.bus.events.text import Unit, cut_end, cut_front, cut_mark
from hookbus.bus.notify.messages import split_title
from hookbus.bus.notify.notifier import Notifier, NotifierConfig
from hookbus.bus.secrets import mark_secret

log = logging.getLogger("hookbus.subscriber.apprise")

_SEPARATORS = re.compile(r"[/:@?&=,;+]")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"',]+")
REMEMBER = 1000  # messages whose per-service progress is kept for retries


def _mark_url_parts(url: str) -> None:
    """Remember every part of an Apprise URL that could be a credential, so that no
    log line, error or status output can show it. Done before Apprise parses the URL:
    its own debug log prints the URL's path as it loads it."""
    mark_secret(url)
    try:
        parts = urlsplit(url)
        for value in (parts.password, parts.path if len(parts.path) >= 8 else None,
                      parts.username if parts.username and len(parts.username) >= 8 else None):
            mark_secret(value)
            mark_secret(unquote(value) if value else None)
        for _, value in parse_qsl(parts.query):
            if len(value) >= 8:
                mark_secret(value)
    except ValueError:
        pass


def _mark_url_secrets(url: str, service: Any) -> None:
    _mark_url_parts(url)
    # What Apprise itself hides in its private form of the URL is a secret too (bot tokens in the host, …).
    try:
        plain, private = service.url(privacy=False), service.url(privacy=True)
    except Exception:  # a plugin that cannot print itself: the URL as given is already marked
        return
    hidden = set(_SEPARATORS.split(private)) | set(_SEPARATORS.split(unquote(private)))
    for token in {*_SEPARATORS.split(plain), *_SEPARATORS.split(unquote(plain))}:
        if len(token) >= 4 and token not in hidden:
            mark_secret(token)


def _load(urls: list[str], config: str | None, tags: list[str]) -> list[tuple[str, Any]]:
    """Return (label, Apprise service) for every target; raise ValueError naming the key."""
    services: list[tuple[str, Any]] = []
    for i, url in enumerate(urls):
        _mark_url_parts(url)
        service = apprise.Apprise.instantiate(url)
        if service is None:
            raise ValueError(f"urls[{i}]: not an Apprise URL that can be used (unknown scheme or missing parts)")
        _mark_url_secrets(url, service)
        services.append((f"urls[{i}] ({service.service_name})", service))
    if config is not None:
        path = Path(config).expanduser()
        if not path.is_file():
            raise ValueError(f"config: {path} is not a readable file")
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise ValueError(f"config: cannot read {path}: {exc.strerror}") from None
        for url in _URL_IN_TEXT.findall(text):
            _mark_url_parts(url.rstrip(":"))
        source = apprise.AppriseConfig()
        if not source.add(str(path)):
            raise ValueError(f"config: {path} is not an Apprise config file")
        bundle = apprise.Apprise()
        bundle.add(source)
        found = list(bundle.find(tag=tags)) if tags else list(bundle.find())
        if not found:
            what = f"no entry tagged {', '.join(tags)}" if tags else "no usable Apprise URL"
            raise ValueError(f"config: {path} has {what}")
        for n, service in enumerate(found, 1):
            try:
                _mark_url_secrets(service.url(privacy=False), service)  # type: ignore[no-untyped-call]
            except Exception:
                pass
            services.append((f"config entry {n} ({service.service_name})", service))
    return services


class AppriseSettings(NotifierConfig):
    urls: list[str] = []
    config: str | None = None  # an Apprise config file (text or YAML)
    tags: list[str] = []  # which entries of the config file to notify (any of these tags)
    format: Literal["text", "markdown", "html"] = "text"

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        _load(value, None, [])
        return value

    @model_validator(mode="after")
    def _targets(self) -> AppriseSettings:
        if not self.urls and self.config is None:
            raise ValueError("set urls (a list of Apprise URLs) or config (an Apprise config file)")
        if self.tags and self.config is None:
            raise ValueError("tags: tags select entries of an Apprise config file; set config")
        if self.config is not None:
            _load([], self.config, self.tags)
        return self


def fit(service: Any, title: str, body: str) -> tuple[str, str]:
    """Given a service's limits, return the title and body cut to fit: the title
    keeps its start, the body its end."""
    title_max = int(getattr(service, "title_maxlen", 250) or 0)
    body_max = int(getattr(service, "body_maxlen", 32768) or 0)
    lines_max = int(getattr(service, "body_max_line_count", 0) or 0)
    if title_max <= 0 and title:  # the service has no title: Apprise puts it on the body's first line
        title = cut_end(title, max(1, body_max // 4)) if body_max > 0 else title
        room = body_max - len(title) - 2
    else:
        title = cut_end(title, title_max)
        room = body_max - (len(title) if getattr(service, "overflow_amalgamate_title", False) else 0)
    if lines_max > 0:
        lines = body.splitlines()
        keep = lines_max - (1 if title_max <= 0 and title else 0)
        if len(lines) > keep:
            kept = lines[-(keep - 1):] if keep > 1 else []
            dropped = sum(len(x) + 1 for x in lines[: len(lines) - len(kept)])
            body = "\n".join([cut_mark(dropped, Unit.CHARACTERS).rstrip(), *kept])
    if body_max > 0:
        body = cut_front(body, max(0, room), Unit.CHARACTERS)
    return title, body


def _notify_in_thread(service: Any, **kwargs: Any) -> tuple[bool, list[str]]:
    """Run one service's notify() and collect the warnings Apprise logged for it
    (its only way of saying why), from this thread only."""
    capture = _ThreadWarnings(threading.get_ident())
    logger = logging.getLogger("apprise")
    logger.addHandler(capture)
    try:
        ok = bool(service.notify(**kwargs))
    except Exception as exc:
        ok, capture.lines = False, [*capture.lines, f"{type(exc).__name__}: {exc}"]
    finally:
        logger.removeHandler(capture)
    return ok, capture.lines


class _ThreadWarnings(logging.Handler):
    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


class AppriseSubscriber(Notifier):
    Config = AppriseSettings
    config: AppriseSettings

    async def start(self) -> None:
        self.services = await asyncio.to_thread(_load, self.config.urls, self.config.config, self.config.tags)
        # message → indexes of the services that already have it, so a retry skips them
        self.done: OrderedDict[tuple[tuple[str, str], ...], set[int]] = OrderedDict()

    async def deliver(self, text: str, events: list[Event]) -> None:
        key = tuple((e.source, e.id) for e in events)
        done = self.done.setdefault(key, set())
        self.done.move_to_end(key)
        while len(self.done) > REMEMBER:
            self.done.popitem(last=False)
        title, body = split_title(text)
        notify_type = self.notify_type(events)
        todo = [i for i in range(len(self.services)) if i not in done]

        async def one(i: int) -> tuple[int, bool, list[str]]:
            service = self.services[i][1]
            t, b = fit(service, title, body)
            ok, warnings = await asyncio.to_thread(_notify_in_thread, service, body=b, title=t,
                                                   notify_type=notify_type, body_format=self.config.format)
            return i, ok, warnings

        results = await asyncio.gather(*(one(i) for i in todo))
        failed = []
        for i, ok, warnings in results:
            label = self.services[i][0]
            if ok:
                done.add(i)
            else:
                reason = "; ".join(warnings[-2:]) or "Apprise reported a failure"
                log.warning("subscriber %s: %s not delivered: %s", self.name, label, reason)
                failed.append(f"{label}: {reason}")
        if failed:
            # Apprise does not say whether a failure is lasting, so every failure is retried.
            raise DeliveryError(f"{len(failed)} of {len(self.services)} Apprise target(s) failed: " + " | ".join(failed))
        self.done.pop(key, None)

    def preview(self, event: Event) -> str:
        text = self.message(event)
        labels = ", ".join(label for label, _ in _load(self.config.urls, self.config.config, self.config.tags))
        return f"{text}\n\n(Apprise {self.notify_type([event])} notification to {labels})"


SUBSCRIBER = AppriseSubscriber
