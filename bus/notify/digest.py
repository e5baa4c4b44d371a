"""Digests: a burst of per-device events becomes one message per group, the way
Alertmanager groups alerts (`group_by`, `group_wait`, `group_interval`).

A group is the set of events with the same values of the `group_by` fields
(default `["job_id"]`, so one netcfgbu run is one group). Its first message goes
out `group_wait` seconds after its first event, with everything that arrived
meanwhile; later events of the group wait until `group_interval` has passed since
the last message. A group with nothing new for `group_interval` is retired.

Only bursty event types are grouped (`GROUPED_TYPES`: per-device results and
`hookbus.delivery.failed`); everything else is sent as it comes, but first the
pending groups of the same job are sent, so a run's device digest never arrives
after its report.

At-least-once, and why it is done this way: `handle()` of a grouped event only
adds it to its group and returns at once. Making it wait for the group message
instead would not work: the runner handles one job's events one at a time, so
the second device event of a run would only reach the digest after the first
one's message had gone out — one message per device. So the digest *holds* the
events it took (`held()`): the runner keeps the subscriber's cursor below every
held seq, and only once the group message containing an event was sent is the
event released. A crash or restart before that delivers the held events again
(from the journal, as with any unacknowledged event) and they go out in a new
group message: a crash re-sends, it never drops. A group message that cannot be
sent is retried with the subscriber's `retry` settings, by the same policy as
an event handled alone (bus/delivery/retry.py: backoff with jitter,
`Retry-After` honoured, a permanent error not retried); when that fails for
good, every event in it is dead-lettered through `give_up` (the subscriber's
`DeliveryContext.give_up`), which publishes `hookbus.delivery.failed` for each,
exactly as for an event handled alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from tenacity import RetryCallState

from hookbus.bus.delivery.retry import describe, retrying
from hookbus.bus.delivery.subscriber import GiveUp
from hookbus.bus.events.event import Event
from hookbus.bus.settings import RetrySettings

log = logging.getLogger("hookbus.digest")

GROUPED_TYPES = frozenset({"backup.device.succeeded", "backup.device.failed", "hookbus.delivery.failed"})

SendGroup = Callable[[list[Event], dict[str, Any]], Awaitable[None]]


def lookup(event: Event, name: str) -> Any:
    """Given a `group_by` name, return the event's value: `type`, `source` and `subject`
    are attributes; anything else is a (dotted) path into `data`."""
    if name in ("type", "source", "subject"):
        return getattr(event, name)
    node: Any = event.data
    for part in name.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if node is None or isinstance(node, (str, int, float, bool)):
        return node
    return orjson.dumps(node, option=orjson.OPT_SORT_KEYS).decode()  # lists/tables: a stable, hashable form


def family(event_type: str) -> str:
    """Device results and delivery failures of one job are different groups."""
    return "device" if event_type.startswith("backup.device.") else event_type


@dataclass(eq=False)
class Group:
    key: tuple[Any, ...]
    labels: dict[str, Any]
    pending: list[Event] = field(default_factory=list)
    sending: list[Event] = field(default_factory=list)
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # send now (the job's next event is waiting)
    task: asyncio.Task[None] | None = None
    messages: int = 0


class Digest:
    def __init__(self, name: str, *, group_by: list[str], group_wait: float, group_interval: float,
                 retry: RetrySettings, timeout: float, send: SendGroup, give_up: GiveUp) -> None:
        self.name = name
        self.group_by = group_by
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.retry = retry
        self.timeout = timeout
        self.send = send
        self.give_up = give_up  # dead-letters an event of a group message that cannot be sent
        self.groups: dict[tuple[Any, ...], Group] = {}
        self._held: set[int] = set()
        self._changed = asyncio.Condition()
        self.messages = 0  # group messages sent, for tests and status

    def takes(self, event: Event) -> bool:
        return event.type in GROUPED_TYPES

    def held(self) -> set[int]:
        return self._held

    def add(self, event: Event) -> None:
        """Put an event in its group, starting the group's timer if it is new."""
        if event.seq is not None:
            if event.seq in self._held:  # already waiting in a group (a replay of a held event)
                return
            self._held.add(event.seq)
        values = tuple(lookup(event, name) for name in self.group_by)
        key = (family(event.type), *values)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(key, dict(zip(self.group_by, values, strict=True)))
            group.task = asyncio.create_task(self._run(group), name=f"digest-{self.name}")
        group.pending.append(event)

    async def _run(self, group: Group) -> None:
        try:
            await self._wait(group, self.group_wait)
            while group.pending:
                group.sending, group.pending = group.pending, []
                await self._deliver(group, group.sending)
                group.sending = []
                await self._wait(group, self.group_interval)
        finally:
            # No await between the last look at `pending` and here: an event added
            # after this starts a new group.
            if self.groups.get(group.key) is group:
                del self.groups[group.key]

    async def _wait(self, group: Group, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await group.kick.wait()
        except TimeoutError:
            pass
        group.kick.clear()

    async def _deliver(self, group: Group, batch: list[Event]) -> None:
        """Send one group message with retries; give the events up when that fails."""
        attempts = 0

        async def failed(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.info("subscriber %s: digest of %d event(s) %s attempt %d failed (%s); retrying in %.1fs",
                     self.name, len(batch), group.labels, state.attempt_number, describe(exc) if exc else "", wait)

        try:
            async for attempt in retrying(self.retry, before_sleep=failed):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    async with asyncio.timeout(self.timeout):
                        await self.send(list(batch), group.labels)
            group.messages += 1
            self.messages += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a group message that cannot be sent: each of its events is dead-lettered
            error = describe(exc)
            log.warning("subscriber %s: digest of %d event(s) %s not sent after %d attempt(s): %s",
                        self.name, len(batch), group.labels, attempts, error)
            for event in batch:
                if event.seq is not None:
                    await self.give_up(event, attempts, f"digest not sent: {error}")
        # Not reached when cancelled (shutdown): those events stay held, so they come again.
        for event in batch:
            self._held.discard(event.seq or 0)
        async with self._changed:
            self._changed.notify_all()

    async def flush_job(self, job_key: str, wait: float) -> None:
        """Send now the groups holding events of this job, and wait (at most `wait`
        seconds) until they are out, so the job's next message follows them."""
        targets: set[int] = set()
        for group in list(self.groups.values()):
            mine = {e.seq for e in (*group.pending, *group.sending) if e.job_key == job_key and e.seq is not None}
            if mine:
                targets |= mine
                group.kick.set()
        if not targets:
            return
        try:
            async with asyncio.timeout(wait), self._changed:
                await self._changed.wait_for(lambda: not (targets & self._held))
        except TimeoutError:
            log.info("subscriber %s: digest of job %s still being sent; not waiting longer", self.name, job_key)

    async def flush_all(self) -> None:
        """Send every pending group now, once, raising on failure (`hookbus test`)."""
        for group in list(self.groups.values()):
            if group.task is not None:
                group.task.cancel()
            batch, group.pending = group.pending, []
            self.groups.pop(group.key, None)
            if batch:
                async with asyncio.timeout(self.timeout):
                    await self.send(batch, group.labels)
                self.messages += 1
            for event in batch:
                self._held.discard(event.seq or 0)

    async def close(self) -> None:
        """Stop the timers. Held events stay unacknowledged: they come again after a restart."""
        tasks = [g.task for g in self.groups.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.groups.clear()
