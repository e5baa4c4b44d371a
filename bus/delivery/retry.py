"""The one retry policy of every delivery: an event handed to a subscriber, and
a digest's group message.

- Whether to try again: a `DeliveryError` with `permanent=True` ends the
  retries at once; any other error is retried until `attempts` (of the
  subscriber's `retry` settings) have been made in all, counting those made
  before a restart.
- How long to wait before attempt n+1: `initial_delay * 2**(n-1)`, at most
  `max_delay`, with jitter (a wait is drawn between half of that and all of
  it), and never shorter than the `Retry-After` the target asked for (at most
  an hour).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, before_nothing, retry_if_exception, stop_after_attempt

from hookbus.bus.delivery.subscriber import DeliveryError
from hookbus.bus.secrets import scrub
from hookbus.bus.settings import RetrySettings

MAX_RETRY_AFTER = 3600.0

Hook = Callable[[RetryCallState], Awaitable[None]]


def is_retryable(exc: BaseException) -> bool:
    """Given a failed attempt's error, return whether another attempt may help."""
    return not (isinstance(exc, DeliveryError) and exc.permanent)


def backoff(attempt: int, initial: float, max_delay: float, error: BaseException | None = None) -> float:
    """Given the number of attempts made so far (1 or more) and the last one's error,
    return the seconds to wait before the next: jittered, and at least the error's Retry-After."""
    delay: float = min(max_delay, initial * 2.0 ** (attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if isinstance(error, DeliveryError) and error.retry_after is not None:
        delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER))
    return delay


class Backoff:
    """`backoff` as tenacity's wait, counting on from attempts made before a restart."""

    def __init__(self, initial: float, max_delay: float, attempts_before: int) -> None:
        self.initial, self.max_delay, self.before = initial, max_delay, attempts_before

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return backoff(self.before + state.attempt_number, self.initial, self.max_delay, error)


def retrying(settings: RetrySettings, *, attempts_before: int = 0, before: Hook | None = None,
             before_sleep: Hook | None = None) -> AsyncRetrying:
    """The retry loop of one delivery (`async for attempt in retrying(…): with attempt: …`):
    the attempts left of `settings.attempts` after `attempts_before`, waiting by
    `backoff`, ending at once on a permanent error; the last error is raised.
    `before` runs before each attempt, `before_sleep` after each failed one that is
    retried (`state.next_action.sleep` says how long the wait is)."""
    return AsyncRetrying(
        stop=stop_after_attempt(max(1, settings.attempts - attempts_before)),
        wait=Backoff(settings.initial_delay, settings.max_delay, attempts_before),
        retry=retry_if_exception(is_retryable),
        before=before or before_nothing,
        before_sleep=before_sleep,
        reraise=True,
    )


def describe(exc: BaseException) -> str:
    """What a failed attempt says, for logs and dead letters (secrets hidden)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return scrub(str(exc) or type(exc).__name__)
