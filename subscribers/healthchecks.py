"""healthchecks: ping a healthchecks.io (or self-hosted Healthchecks) check as jobs
start and finish, so a backup that stops running is noticed.

| event | ping |
|---|---|
| `backup.job.started` | `/start` |
| `backup.job.finished`, success | the check's URL |
| `backup.job.finished`, failed or cancelled | `/fail`, or `/{exit_status}` when the event has one |
| `backup.job.finished`, warning | as `warning_as`: success, `/fail` or `/log` |
| `backup.report` (netcfgbu) | success, or `/fail` when a device failed |
| `backup.log` | `/log` |

Every ping carries `rid`: the job's id as a UUID (a UUIDv5 of it when it is not
one), the same on start and finish, so Healthchecks measures the job's run time.
The body is the message and the tail of the output, within the server's
`Ping-Body-Limit` (learnt from its answers; 10,000 bytes until then). A slug URL
gets `?create=1`, so a new job's check is created on its first ping.

A success (or start) ping older than `max_age` is not sent: a late "success"
would say a backup ran now when it did not; a failure is still worth sending.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from hookbus.adapters.http import HttpClient, redact_url
from hookbus.bus.delivery.subscriber import DeliveryError, Subscriber, SubscriberConfig
from hookbus.bus.events.event import Event
from hookbus.bus.events.text import cut_front
from hookbus.bus.events.times import parse_time
from hookbus.bus.events.vocabulary import Outcome, TaskStatus
from hookbus.bus.notify.messages import render_default
from hookbus.bus.secrets import mark_secret
from hookbus.bus.settings import UUID, Duration

log = logging.getLogger("hookbus.subscriber.healthchecks")

DEFAULT_BODY_LIMIT = 10_000  # self-hosted Healthchecks' default; healthchecks.io says more in Ping-Body-Limit
MAX_BODY_LIMIT = 10_000_000
RID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "hookbus:job_id")


def _ping_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be a ping URL such as https://hc-ping.com/<uuid> or https://hc-ping.com/<ping-key>/<slug>")
    parts = urlsplit(value)
    if parts.path.strip("/") == "":
        raise ValueError("must name a check: https://hc-ping.com/<uuid> or https://hc-ping.com/<ping-key>/<slug>")
    mark_secret(value)  # the UUID or ping key is the check's credential
    mark_secret(parts.path)
    for segment in parts.path.split("/"):
        if len(segment) >= 8:
            mark_secret(segment)
    return value


class HealthchecksConfig(SubscriberConfig):
    url: str | None = None  # one check for every job
    checks: dict[str, str] = {}  # job name → ping URL
    warning_as: Literal["success", "fail", "log"] = "fail"
    max_age: Duration = Field(3600.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _ping_url(value)

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: dict[str, str]) -> dict[str, str]:
        for job, url in value.items():
            try:
                _ping_url(url)
            except ValueError as exc:
                raise ValueError(f"{job}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_target(self) -> HealthchecksConfig:
        if self.url is None and not self.checks:
            raise ValueError("set url (one check for every job) or checks (job name → ping URL)")
        return self


def run_id(job_id: Any) -> str:
    """The job's id as a UUID: itself when it is one, else a UUIDv5 of it (stable, so
    start and finish carry the same rid)."""
    text = str(job_id)
    if UUID.fullmatch(text):
        return str(uuid.UUID(text))
    return str(uuid.uuid5(RID_NAMESPACE, text))


def is_slug_url(url: str) -> bool:
    """https://hc-ping.com/<uuid> pings by UUID; …/<ping-key>/<slug> by slug."""
    last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return not UUID.fullmatch(last)


def ping_url(base: str, suffix: str, rid: str | None) -> str:
    """Given a check's URL, return it with `/start`, `/fail`, … and the query (`rid`, `create`)."""
    parts = urlsplit(base)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if rid:
        query.append(("rid", rid))
    if is_slug_url(base) and not any(k == "create" for k, _ in query):
        query.append(("create", "1"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + suffix, urlencode(query), ""))


def event_age(event: Event) -> float | None:
    data = event.fields
    when = data.get("finished_at") or data.get("stop") or event.time
    if not isinstance(when, str):
        return None
    stamp = parse_time(when, assume_tz=None)
    if stamp is None or stamp.tzinfo is None:
        return None
    return time.time() - stamp.timestamp()


def exit_status(data: dict[str, Any]) -> int | None:
    for key in ("exit_status", "exit_code"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 255:
            return value
    return None


def output_tail(event: Event) -> str:
    """The output worth reading with a ping: the failed tasks' output tails first,
    then the others', then the job's error."""
    data = event.fields
    parts: list[str] = []
    tasks = [t for t in (data.get("tasks") or []) if isinstance(t, dict)]
    if isinstance(data.get("task"), dict):
        tasks.append(data["task"])
    tasks.sort(key=lambda t: t.get("status") != TaskStatus.FAILED)
    for task in tasks:
        tail = task.get("output_tail")
        if isinstance(tail, str) and tail.strip():
            name = task.get("name") or task.get("kind") or "task"
            parts.append(f"--- {name} ({task.get('status') or '?'}) ---\n{tail.rstrip()}")
    if isinstance(data.get("error"), str) and data["error"].strip():
        parts.append(f"--- error ---\n{data['error'].rstrip()}")
    return "\n\n".join(parts)


def ping_body(message: str, output: str, limit: int) -> bytes:
    """The message, then the output cut from the front, within `limit` bytes."""
    head = message.encode()
    if not output or len(head) + 2 >= limit:
        return cut_front(message, limit).encode()
    return head + b"\n\n" + cut_front(output, limit - len(head) - 2).encode()


class HealthchecksSubscriber(Subscriber):
    Config = HealthchecksConfig
    default_events: ClassVar[list[str]] = ["backup.job.started", "backup.job.finished", "backup.report", "backup.log"]
    config: HealthchecksConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.body_limits: dict[str, int] = {}  # host → the server's Ping-Body-Limit

    async def start(self) -> None:
        self.http = HttpClient(timeout=self.config.timeout)

    def target(self, event: Event) -> str | None:
        """The check's URL for the event's job, or None when it has none."""
        job = event.fields.get("job")
        if isinstance(job, str) and job in self.config.checks:
            return self.config.checks[job]
        return self.config.url

    def suffix(self, event: Event) -> str | None:
        """`/start`, `""` (success), `/fail`, `/{n}`, `/log`; None: nothing to ping for this event."""
        data = event.fields
        if event.type == "backup.job.started":
            return "/start"
        if event.type == "backup.log":
            return "/log"
        if event.type == "backup.report":
            return "/fail" if data.get("fail") else ""
        if event.type == "backup.job.finished":
            outcome = data.get("outcome")
            if outcome == Outcome.SUCCESS:
                return ""
            if outcome == Outcome.WARNING:
                return {"success": "", "fail": "/fail", "log": "/log"}[self.config.warning_as]
            status = exit_status(data)
            return f"/{status}" if status is not None else "/fail"
        return None

    def plan(self, event: Event) -> tuple[str, bytes] | str:
        """Return (ping URL, body), or the reason nothing is sent."""
        base = self.target(event)
        if base is None:
            job = event.fields.get("job")
            return f"no check for job {job!r} (set url, or add it to checks)"
        suffix = self.suffix(event)
        if suffix is None:
            return f"{event.type} is not pinged"
        if suffix in ("", "/start"):
            age = event_age(event)
            if age is not None and age > self.config.max_age:
                kind = "success" if suffix == "" else "start"
                return f"{kind} ping is {age:.0f}s old, more than max_age ({self.config.max_age:.0f}s): it would be wrong now"
        job_id = event.fields.get("job_id")
        rid = run_id(job_id) if job_id not in (None, "") else None
        url = ping_url(base, suffix, rid)
        limit = self.body_limits.get(urlsplit(url).netloc, DEFAULT_BODY_LIMIT)
        return url, ping_body(render_default(event), output_tail(event), limit)

    async def handle(self, event: Event) -> None:
        plan = self.plan(event)
        if isinstance(plan, str):
            log.info("subscriber %s: %s (%s); no ping", self.name, plan, event.type)
            return
        url, body = plan
        _, _, headers = await self.http.request("POST", url, data=body,
                                                headers={"Content-Type": "text/plain; charset=utf-8"})
        self._learn_limit(url, headers)

    def _learn_limit(self, url: str, headers: Any) -> None:
        value = headers.get("Ping-Body-Limit") if headers is not None else None
        if value and str(value).strip().isdigit():
            self.body_limits[urlsplit(url).netloc] = max(100, min(int(value), MAX_BODY_LIMIT))

    def sample(self, event: Event) -> Event:
        """With only `checks`, test the first configured job's check."""
        data = event.fields
        if self.config.url is None and data.get("job") not in self.config.checks:
            event = dataclasses.replace(event, data={**data, "job": next(iter(self.config.checks))})
        return event

    def preview(self, event: Event) -> str:
        plan = self.plan(event)
        if isinstance(plan, str):
            raise DeliveryError(f"nothing to send: {plan}", permanent=True)
        url, body = plan
        query = urlsplit(url).query
        return f"POST {redact_url(url)}{self.suffix(event) or ''}?{query}\n\n{body.decode()}"

    async def close(self) -> None:
        http = getattr(self, "http", None)
        if http is not None:
            await http.close()


SUBSCRIBER = HealthchecksSubscriber
