"""The one small interface every subscriber kind implements.

A kind is a module in `subscribers/` (or a package registered under the
entry-point group `hookbus.subscribers`) that exposes `SUBSCRIBER`, a subclass
of `Subscriber` with:

- `Config`: a pydantic model (subclass of `SubscriberConfig`) of its keys;
- `default_events`: the event-type globs it wants when `events` is not set;
- `async handle(event)`: do the side effect, or raise `DeliveryError`
  (`permanent=True` when retrying cannot help).

What a subscriber may ask of the runtime comes in one explicit
`DeliveryContext`, given by the runner through `bind(context)` once, before
`start()`, and kept as `self.context`. A subscriber that reports back to the
bus (e.g. a validation result) calls `await self.context.publish([event, …])`:
it returns once the broker has stored the events (`[{"id", "seq",
"duplicate"}]`). Give such events a deterministic `id`, so that a redelivery
of the trigger publishes a duplicate, not a second result. Until a runner
binds one (`hookbus test`), the context has no bus: `publish` and `give_up`
are None.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson
from pydantic import Field

from hookbus.bus.events.event import Event
from hookbus.bus.settings import Duration, RetrySettings, Strict
from hookbus.bus.store.journal import settle_future

T = TypeVar("T")


class SubscriberConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    events: list[str] | None = None
    when: dict[str, Any] = {}
    retry: RetrySettings = RetrySettings()
    timeout: Duration = Field(30.0, gt=0, le=86400)


class DeliveryError(Exception):
    """A failed side effect. `permanent` errors go straight to the dead letters;
    others are retried, waiting at least `retry_after` seconds when given."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Answer:
    """What the receiver answered to the attempt in progress, for the delivery trail:
    an HTTP status, a command's exit status; None when nothing was said."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None


# The runner sets one before each attempt; `note_answer` fills it in. A holder, not the
# value itself: whatever a handler runs in a task of its own (with a copy of the context) still reaches it.
_ANSWER: contextvars.ContextVar[Answer | None] = contextvars.ContextVar("hookbus_answer", default=None)


def note_answer(status: int | None) -> None:
    """Say what the receiver answered to this attempt (an HTTP status, an exit status):
    the delivery trail shows it. For kinds and outbound clients; a kind that says
    nothing shows no status. Outside a runner's attempt it does nothing."""
    answer = _ANSWER.get()
    if answer is not None:
        answer.status = status


def listen_for_answer() -> tuple[Answer, contextvars.Token[Answer | None]]:
    """For the runner: a fresh Answer for the attempt about to start (give the token back with `_ANSWER.reset`)."""
    answer = Answer()
    return answer, _ANSWER.set(answer)


def stop_listening(token: contextvars.Token[Answer | None]) -> None:
    _ANSWER.reset(token)


Publish = Callable[[list[Event]], Awaitable[list[dict[str, Any]]]]
GiveUp = Callable[[Event, int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """What the runtime gives a subscriber (see the module docstring).

    - `name`: the subscriber's name, for its logs;
    - `publish(events)`: publish events on its behalf; return once the broker has
      stored them. Raise BrokerUnavailable (not answered in time) or BrokerRefused;
    - `give_up(event, attempts, error)`: dead-letter an event it held and could not
      deliver (see `Subscriber.held`); the bus then publishes `hookbus.delivery.failed`.

    `publish` and `give_up` are None when no bus is attached (`hookbus test`).
    """

    name: str
    publish: Publish | None = None
    give_up: GiveUp | None = None


class Subscriber:
    Config: ClassVar[type[SubscriberConfig]] = SubscriberConfig
    default_events: ClassVar[list[str]] = ["*"]
    # True: events are handled one at a time in journal order (e.g. an append-only file).
    # False: one job's events in order, different jobs concurrently.
    ordered: ClassVar[bool] = False
    concurrency: ClassVar[int] = 8
    # True: handle_many() takes several queued events (of one lane, in order) at once.
    takes_many: ClassVar[bool] = False
    # A notification kind: while a silence matches an event, it is not sent (DESIGN §10).
    silenceable: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.context = DeliveryContext(config.name)  # no bus attached until a runner binds one

    def bind(self, context: DeliveryContext) -> None:
        """Take what the runtime gives this subscriber; called by the runner once, before start()."""
        self.context = context

    def handler_timeout(self) -> float:
        """Seconds the runner lets one handle() call run before cancelling it.

        A kind that applies `timeout` to its own work (a child process it must
        stop, then report on) returns more, so its own timeout fires first."""
        return float(self.config.timeout)

    async def start(self) -> None:
        """Open files and sessions; called once before the first event."""

    async def joined(self, journal: int, head: int) -> None:
        """Told once the broker has answered, before the first event: the journal's
        identity (a random number chosen at its creation) and its head. A kind that
        keeps its own position (jsonl) checks here that it follows that journal."""

    async def handle(self, event: Event) -> None:
        raise NotImplementedError

    async def handle_many(self, events: list[Event]) -> None:
        """Handle several events of one lane in order, in one go (with `takes_many`).
        On any error the runner hands them to handle() one by one, so a kind may
        have done part of them; handle() must then not do that part twice, or
        the receiver must deduplicate (by `source` + `id`, or `seq`)."""
        for event in events:
            await self.handle(event)

    async def close(self) -> None:
        """Release what start() opened."""

    # -- optional: held events, previews, start-up checks -----------------------------------

    def held(self) -> Collection[int]:
        """Seqs of events handle() has returned from but whose side effect is still to
        come (a digest waiting to send its group message). The runner keeps the cursor
        below them, so a crash delivers them again instead of losing them; when the
        side effect fails for good, the subscriber calls `self.context.give_up(event, attempts, error)`."""
        return ()

    async def flush(self) -> None:
        """Do now what is held back (send pending digests); raise DeliveryError on failure."""

    def sample(self, event: Event) -> Event:
        """Adapt a sample event for `hookbus test` (e.g. to a job this subscriber knows)."""
        return event

    def preview(self, event: Event) -> str:
        """What handle(event) would send, for `hookbus test` (secrets left out); raise
        DeliveryError when it would send nothing."""
        return orjson.dumps({**event.to_dict(), "seq": event.seq}, option=orjson.OPT_INDENT_2).decode()

    @classmethod
    def check(cls, config: Any) -> None:
        """Called once the config is valid, at every start-up and by `hookbus check-config`:
        raise ConfigError("key: problem") for what validation alone cannot see (templates)."""


def wants(config: SubscriberConfig, event: Event) -> bool:
    """Given a subscriber's `when` table, return whether the event's data matches it all."""
    if not config.when:
        return True
    data = event.fields
    for key, allowed in config.when.items():
        value = data.get(key)
        options = allowed if isinstance(allowed, list) else [allowed]
        if value not in options:
            return False
    return True


def in_daemon_thread(fn: Callable[..., T], *args: Any, name: str) -> asyncio.Future[T]:
    """Run a blocking call (a plugin, a Batfish client) in a daemon thread of its
    own; the future has its result or exception. Not the default executor: a
    call that hangs forever would hold up the loop's shutdown there and a shared
    pool's workers, and no thread can be stopped from outside anyway. Await it
    within a timeout; a call that returns after its waiter left is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        try:
            loop.call_soon_threadsafe(settle_future, future, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=work, name=name, daemon=True).start()
    return future
