"""The `backup.validation.finished` event, shared by the validators (the
`ansible` and `batfish` subscriber kinds).

Given the event that triggered a check and the check's `Result`,
`result_event` returns the event to publish. Its `id` is derived from the
trigger's `source` + `id` and its `source` names the subscriber, so a
redelivered trigger yields the same identity: the broker stores it once and
answers a repeat as a duplicate, never as a second, different result.

`Reporter.report` runs a check and publishes its result, keeping the result
while the broker cannot be reached, so the retry publishes it instead of
running the check again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hookbus.bus.delivery.subscriber import DeliveryError, Publish
from hookbus.bus.events.event import Event
from hookbus.bus.events.times import now_rfc3339
from hookbus.bus.events.vocabulary import Outcome
from hookbus.bus.transport.client import BrokerRefused, BrokerUnavailable

log = logging.getLogger("hookbus.validation")

VALIDATION_FINISHED = "backup.validation.finished"
MAX_FINDINGS = 10
MAX_UNPUBLISHED = 100


@dataclass(slots=True)
class Result:
    """What one check found. `reason` says why it failed (None on success)."""

    outcome: Literal[Outcome.SUCCESS, Outcome.FAILED]
    summary: str
    reason: str | None = None
    findings: list[str] = field(default_factory=list)  # most important first; human-readable lines
    details: dict[str, Any] = field(default_factory=dict)


def result_source(subscriber: str) -> str:
    return f"hookbus://subscribers/{subscriber}"


def result_id(trigger: Event) -> str:
    digest = hashlib.sha256(f"{trigger.source}\n{trigger.id}".encode()).hexdigest()[:32]
    return f"validation-{digest}"


def result_event(subscriber: str, validator: str, trigger: Event, result: Result) -> Event:
    """Return the `backup.validation.finished` event reporting `result` for `trigger`."""
    data_in = trigger.fields
    data: dict[str, Any] = {
        "job_id": data_in.get("job_id"),
        "validator": validator,
        "subscriber": subscriber,
        "outcome": result.outcome,
        "reason": result.reason,
        "summary": result.summary,
        "findings": result.findings[:MAX_FINDINGS],
        "findings_total": len(result.findings),
        "details": result.details,
        "trigger": {"type": trigger.type, "id": trigger.id, "source": trigger.source, "seq": trigger.seq},
    }
    for key in ("job", "repository"):  # so that messages can name what was validated
        if isinstance(data_in.get(key), str):
            data[key] = data_in[key]
    return Event(id=result_id(trigger), source=result_source(subscriber), type=VALIDATION_FINISHED,
                 time=now_rfc3339(), subject=trigger.subject, data=data)


class Reporter:
    """Runs a validator's checks and publishes their results for one subscriber."""

    def __init__(self, subscriber: str, validator: str) -> None:
        self.subscriber = subscriber
        self.validator = validator
        self.unpublished: OrderedDict[tuple[str, str], Event] = OrderedDict()

    async def report(self, trigger: Event, check: Callable[[], Awaitable[Result]], publish: Publish | None) -> None:
        """Run `check` for `trigger` (unless its result still waits to be published) and publish the result.

        Raise DeliveryError (retryable) when the broker cannot be reached.
        """
        if trigger.type == VALIDATION_FINISHED:
            # A result never triggers another check: two validators would feed each other forever.
            log.debug("subscriber %s: %s %s is a validation result; not validated again",
                      self.subscriber, trigger.type, trigger.id)
            return
        key = (trigger.source, trigger.id)
        event = self.unpublished.get(key)
        if event is None:
            result = await check()
            event = result_event(self.subscriber, self.validator, trigger, result)
            log.info("subscriber %s: %s for %s %s: %s", self.subscriber, result.outcome, trigger.type, trigger.id, result.summary)
        if publish is None:
            log.warning("subscriber %s: no bus attached; result not published", self.subscriber)
            return
        self.unpublished[key] = event
        while len(self.unpublished) > MAX_UNPUBLISHED:
            self.unpublished.popitem(last=False)
        try:
            accepted = await publish([event])
        except BrokerUnavailable as exc:
            raise DeliveryError(f"validation result not published: {exc}") from None
        except BrokerRefused as exc:
            self.unpublished.pop(key, None)
            raise DeliveryError(f"validation result refused by the broker: {exc}", permanent=True) from None
        self.unpublished.pop(key, None)
        if accepted and accepted[0].get("duplicate"):
            log.info("subscriber %s: result for %s was published before (seq %s); not published again",
                     self.subscriber, trigger.id, accepted[0].get("seq"))
