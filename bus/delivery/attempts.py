"""Handing events to a subscriber: one try for most; after a failure, retries
by the retry policy (bus/delivery/retry.py) with the retry state saved at the
broker before each attempt (so a restart goes on counting, and waiting); an
event that still fails, or fails for good, is dead-lettered. Each attempt goes
on the delivery trail (trail.py): delivered, failed, or dead for the last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tenacity import RetryCallState

from hookbus.bus.delivery.control import tell
from hookbus.bus.delivery.deadlines import Deadlines
from hookbus.bus.delivery.retry import describe, retrying
from hookbus.bus.delivery.subscriber import Answer, Subscriber, SubscriberConfig, listen_for_answer, stop_listening
from hookbus.bus.delivery.trail import Trail
from hookbus.bus.events.event import Event
from hookbus.bus.secrets import scrub
from hookbus.bus.store.base import DEAD, FAILED
from hookbus.bus.transport import protocol
from hookbus.bus.transport.client import ControlClient

log = logging.getLogger("hookbus.subscriber")


class Attempts:
    def __init__(self, config: SubscriberConfig, sub: Subscriber, client: ControlClient, deadlines: Deadlines,
                 stats: dict[str, int], trail: Trail) -> None:
        self.config = config
        self.name = config.name
        self.sub = sub
        self.client = client
        self.deadlines = deadlines
        self.stats = stats
        self.trail = trail
        self.retry_state: dict[int, tuple[int, float]] = {}  # seq → (attempts made, next attempt at), as saved

    async def deliver_many(self, events: list[Event]) -> bool:
        """One try at handing several queued events to a kind that takes them
        together (one write for many lines). Return success; on failure the
        caller delivers them one by one, with retries."""
        answer, token = listen_for_answer()
        try:
            await self.deadlines.timed(self.sub.handle_many(events))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # judged again, event by event (their trail shows those attempts)
            log.debug("subscriber %s: %d events together failed (%s); one by one now", self.name, len(events), describe(exc))
            return False
        finally:
            stop_listening(token)
        self.stats["delivered"] += len(events)
        for event in events:
            self.trail.delivered(event.seq or 0, 1, answer.status)
        return True

    async def deliver(self, event: Event) -> bool:
        """Handle one event with retries; dead-letter it when that fails. Return success."""
        state = self.retry_state.pop(event.seq or 0, None)
        answer, token = listen_for_answer()  # what the receiver says, for the trail
        try:
            if state is None:  # most events succeed at once: spare them the retry machinery
                try:
                    await self.deadlines.timed(self.sub.handle(event))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # handed to the retry loop as its first attempt
                    return await self._retry(event, 0, exc, answer)
                self.stats["delivered"] += 1
                self.trail.delivered(event.seq or 0, 1, answer.status)
                return True
            before, next_at = state
            if next_at > time.time():  # capped: a clock set back must not put a retry off for a day
                await asyncio.sleep(min(next_at - time.time(), self.config.retry.max_delay))
            return await self._retry(event, before, None, answer)
        finally:
            stop_listening(token)

    async def _retry(self, event: Event, before: int, first_error: Exception | None, answer: Answer) -> bool:
        """Deliver with retries, counting on from `before` attempts made before a
        restart; `first_error` is an attempt that has just failed."""
        saved = _RetryLog(self, event.seq or 0, before, answer)
        attempts = before
        try:
            async for attempt in retrying(self.config.retry, attempts_before=before, before=saved.starting,
                                          before_sleep=saved.failed):
                with attempt:
                    attempts = before + attempt.retry_state.attempt_number
                    if first_error is not None:  # the fast path's failed attempt: let the policy judge it
                        error, first_error = first_error, None
                        raise error
                    answer.status = None
                    await self.deadlines.timed(self.sub.handle(event))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a handler ends here, never in the loop
            reason = describe(exc)
            self.trail.add(event.seq or 0, attempts, DEAD, answer.status, reason)
            await self._dead(event.seq or 0, attempts, reason)
            return False
        self.stats["delivered"] += 1
        self.trail.delivered(event.seq or 0, attempts, answer.status)
        if saved.persisted or before:
            await self.tell(protocol.RETRY, {"name": self.name, "seq": event.seq or 0, "attempts": 0})
        return True

    async def give_up(self, event: Event, attempts: int, error: str) -> None:
        """Dead-letter an event the subscriber held and could not deliver (see Subscriber.held)."""
        self.trail.add(event.seq or 0, attempts, DEAD, None, error)
        await self._dead(event.seq or 0, attempts, scrub(error))

    async def _dead(self, seq: int, attempts: int, error: str) -> None:
        self.stats["dead_lettered"] += 1
        await self.tell(protocol.DEAD, {"name": self.name, "seq": seq, "attempts": attempts, "error": error}, timeout=None)

    async def tell(self, command: bytes, payload: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any] | None:
        return await tell(self.client, self.name, command, payload, timeout)


class _RetryLog:
    """One event's retries as the broker keeps them. Write-ahead: a crash during an attempt still counts it."""

    def __init__(self, attempts: Attempts, seq: int, before: int, answer: Answer) -> None:
        self.attempts, self.seq, self.before, self.answer = attempts, seq, before, answer
        self.persisted = False
        self.last_error = ""

    async def save(self, made: int, next_at: float) -> None:
        self.persisted = True
        await self.attempts.tell(protocol.RETRY, {"name": self.attempts.name, "seq": self.seq, "attempts": made,
                                                  "next_at": next_at, "error": self.last_error})

    async def starting(self, state: RetryCallState) -> None:
        if self.before or state.attempt_number > 1:
            await self.save(self.before + state.attempt_number, time.time())

    async def failed(self, state: RetryCallState) -> None:
        self.attempts.stats["failed_attempts"] += 1
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = describe(exc) if exc else ""
        wait = state.next_action.sleep if state.next_action else 0.0
        self.attempts.trail.add(self.seq, self.before + state.attempt_number, FAILED, self.answer.status, self.last_error)
        log.info("subscriber %s: seq %d attempt %d failed (%s); retrying in %.1fs",
                 self.attempts.name, self.seq, self.before + state.attempt_number, self.last_error, wait)
        await self.save(self.before + state.attempt_number, time.time() + wait)
