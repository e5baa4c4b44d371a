"""What every message-sending subscriber kind shares (slack, apprise): choosing
and rendering the template, checking templates at start-up, and the digest.

A kind subclasses `Notifier` and implements `deliver(text, events)`: send one
rendered message (the first line is its title) about one event, or about the
events of one digest group.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.events.event import Event, compile_globs
from hookbus.bus.events.vocabulary import Outcome
from hookbus.bus.notify.digest import Digest
from hookbus.bus.notify.messages import DIGEST_KEY, digest_context, render_default, render_message, samples_for, template_for
from hookbus.bus.notify.templates import SAMPLES, TemplateError, check_template, is_error
from hookbus.bus.settings import ConfigError, Duration

log = logging.getLogger("hookbus.notify")

_FIELD = re.compile(r"^[A-Za-z0-9_.-]+$")


class NotifierConfig(SubscriberConfig):
    # One template for every event type, or a table: event-type glob (or "digest") → template.
    template: str | dict[str, str] | None = None
    group_by: list[str] = ["job_id"]
    group_wait: Duration = Field(30.0, ge=0, le=86400)
    group_interval: Duration = Field(300.0, gt=0, le=86400)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _FIELD.match(name):
                raise ValueError(f"{name!r} is not a field name (e.g. job_id, device.os_name, source)")
        return value

    @field_validator("template")
    @classmethod
    def _template_keys(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(value, dict):
            for key in value:
                if not key or any(c in key for c in " \t\n"):
                    raise ValueError(f"{key!r} is not an event-type glob (or \"digest\")")
        return value


class Notifier(Subscriber):
    Config: ClassVar[type[SubscriberConfig]] = NotifierConfig
    # A monitor's alerts (a check down and back up, an anomaly) reach every notifier by default.
    default_events: ClassVar[list[str]] = ["backup.job.finished", "backup.report", "backup.validation.finished",
                                           "hookbus.delivery.failed", "backup.check.down", "backup.check.up",
                                           "backup.job.anomaly"]
    config: NotifierConfig
    silenceable: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.digest = Digest(
            config.name, group_by=config.group_by, group_wait=config.group_wait, group_interval=config.group_interval,
            retry=config.retry, timeout=config.timeout, send=self._send_group, give_up=self._give_up)

    # -- what a kind implements ---------------------------------------------------------------

    async def deliver(self, text: str, events: list[Event]) -> None:
        raise NotImplementedError

    # -- rendering ------------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return "template" + (f"[{key!r}]" if key else "")

    def message(self, event: Event) -> str:
        """Render the message for one event; a template that fails on this event's
        data is a permanent error (a retry renders the same)."""
        key, source = template_for(event.type, self.config.template)
        if key == "default":
            return render_default(event)
        try:
            return render_message(source, event)
        except TemplateError as exc:
            raise DeliveryError(f"{self._where(key)}: {exc}", permanent=True) from None

    def group_message(self, events: list[Event], labels: dict[str, Any]) -> str:
        if len(events) == 1:
            return self.message(events[0])
        key, source = template_for(DIGEST_KEY, self.config.template)
        try:
            return render_message(source, events[-1], digest=digest_context(events, labels))
        except TemplateError as exc:
            raise DeliveryError(f"{self._where(key)}: {exc}", permanent=True) from None

    def preview(self, event: Event) -> str:
        return self.message(event)

    # -- the subscriber interface ------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if self.digest.takes(event):
            self.digest.add(event)
            return
        # The job's pending device digest goes first, so it never follows the run's report.
        await self.digest.flush_job(event.job_key, wait=min(10.0, self.config.timeout / 3))
        text = self.message(event)
        if not text.strip():  # a template may render nothing on purpose: then nothing is sent
            log.debug("subscriber %s: template rendered nothing for %s; not sent", self.name, event.type)
            return
        await self.deliver(text, [event])

    async def _send_group(self, events: list[Event], labels: dict[str, Any]) -> None:
        text = self.group_message(events, labels)
        if text.strip():
            await self.deliver(text, events)

    async def _give_up(self, event: Event, attempts: int, error: str) -> None:
        if self.context.give_up is not None:  # else no bus is attached (`hookbus test`): nowhere to dead-letter
            await self.context.give_up(event, attempts, error)

    def held(self) -> set[int]:
        return self.digest.held()

    async def flush(self) -> None:
        await self.digest.flush_all()

    async def close(self) -> None:
        await self.digest.close()

    # -- start-up check -----------------------------------------------------------------------------

    @classmethod
    def check(cls, config: Any) -> None:
        """Render every template the subscriber can use against the sample events it would
        get; raise ConfigError naming the template."""
        patterns = config.events if config.events is not None else cls.default_events
        wanted = compile_globs(patterns).match
        types = [t for t in SAMPLES if wanted(t)]
        template = config.template
        entries: dict[str, str] = {"": template} if isinstance(template, str) else dict(template or {})
        for key, source in entries.items():
            samples, names = samples_for(key, types)
            try:
                check_template(source, samples, **names)
            except TemplateError as exc:
                raise ConfigError(f"template{f'.{key}' if key else ''}: {exc}") from None

    def notify_type(self, events: list[Event]) -> str:
        """success / warning / failure / info, for targets that show it."""
        if any(is_error(e) for e in events):
            return "failure"
        # A check back up is good news whatever its run's outcome; an anomaly is a warning.
        outcomes = [e.fields.get("outcome") for e in events if e.type != "backup.check.up"]
        if Outcome.WARNING in outcomes or any(e.type == "backup.job.anomaly" for e in events):
            return "warning"
        if Outcome.SUCCESS in outcomes or all(e.type in ("backup.device.succeeded", "backup.report", "backup.vcs.saved",
                                                         "backup.check.up") for e in events):
            return "success"
        return "info"
