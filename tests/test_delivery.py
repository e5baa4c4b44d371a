"""Parts of the delivery layer alone: the one retry policy (the runner's and the
digest's), the handler deadline, and the context a subscriber is given."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hookbus.bus.delivery.deadlines import Deadlines
from hookbus.bus.delivery.retry import MAX_RETRY_AFTER, backoff, is_retryable, retrying
from hookbus.bus.events.event import Event
from hookbus.bus.settings import RetrySettings
from hookbus.subscribers import DeliveryContext, DeliveryError, Subscriber, SubscriberConfig


@pytest.mark.parametrize(("attempt", "full"), [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (100, 60.0)])
def test_backoff_doubles_up_to_max_delay_with_jitter(attempt: int, full: float) -> None:
    delays = [backoff(attempt, 1.0, 60.0) for _ in range(200)]
    assert all(full / 2 <= d <= full for d in delays) and len(set(delays)) > 1


def test_backoff_waits_at_least_what_retry_after_asks_at_most_an_hour() -> None:
    assert backoff(1, 1.0, 60.0, DeliveryError("429", retry_after=120.0)) == 120.0
    assert backoff(1, 1.0, 60.0, DeliveryError("429", retry_after=1e9)) == MAX_RETRY_AFTER
    assert backoff(1, 1.0, 60.0, DeliveryError("503")) <= 1.0


def test_only_permanent_errors_are_not_retried() -> None:
    assert not is_retryable(DeliveryError("410 gone", permanent=True))
    assert is_retryable(DeliveryError("503")) and is_retryable(TimeoutError()) and is_retryable(OSError("reset"))


async def attempts_made(settings: RetrySettings, error: Exception, before: int = 0) -> int:
    made = 0
    with pytest.raises(type(error)):
        async for attempt in retrying(settings, attempts_before=before):
            with attempt:
                made += 1
                raise error
    return made


async def test_retrying_stops_after_the_attempts_left_or_at_a_permanent_error() -> None:
    settings = RetrySettings(attempts=3, initial_delay=0.001, max_delay=0.002)
    assert await attempts_made(settings, DeliveryError("503")) == 3
    assert await attempts_made(settings, DeliveryError("503"), before=2) == 1  # counted on after a restart
    assert await attempts_made(settings, DeliveryError("400", permanent=True)) == 1


async def test_a_call_past_its_deadline_times_out_and_a_shutdown_is_no_timeout() -> None:
    deadlines = Deadlines(lambda: 0.1)
    watchdog = asyncio.create_task(deadlines.watch())
    try:
        with pytest.raises(TimeoutError):
            await deadlines.timed(asyncio.sleep(10))
        call = asyncio.create_task(deadlines.timed(asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        watchdog.cancel()


class Reports(Subscriber):
    async def handle(self, event: Event) -> None:
        assert self.context.publish is not None
        await self.context.publish([event])


async def test_a_subscriber_uses_the_context_it_is_bound_to() -> None:
    sub = Reports(SubscriberConfig(name="reports", kind="reports"))
    assert sub.context == DeliveryContext("reports")  # no bus attached yet: nothing to publish with
    published: list[Any] = []

    async def publish(events: list[Event]) -> list[dict[str, Any]]:
        published.extend(events)
        return [{"id": e.id, "seq": 1, "duplicate": False} for e in events]

    sub.bind(DeliveryContext("reports", publish=publish))
    event = Event(id="e-1", source="test://", type="backup.log", time="2026-11-21T03:38:00Z", data={})
    await sub.handle(event)
    assert published == [event]
